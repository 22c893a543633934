r"""Pluggable batching.

The engine never builds a loader itself: it calls a *loader factory*

.. code-block:: python

    loader = factory(dataset, batch_size=32, shuffle=True, device=device,
                     generator=generator)

once per split and iterates over the loader once per epoch. Before each
training epoch it re-seeds :obj:`generator` with a value derived from
``(seed, epoch)`` only, so the data order of an epoch does not depend on what
happened before it (this is what makes ``--resume`` exact). A factory's
loader must draw all of its randomness from :obj:`generator` (a CPU
:class:`torch.Generator`) when it iterates.

Batches are PyG batches (or anything with :obj:`x`, :obj:`y`,
:obj:`num_graphs` and ``.to(device)``): graph loaders yield
:class:`~torch_geometric.data.Batch` objects; image datasets of
``(x, y)`` or ``(x, y, env)`` tuples are wrapped in :class:`TensorBatch`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Subset

from ..registry import UnknownNameError

LoaderFactory = Callable[..., Iterable]


class TensorBatch:
    r"""A batch of non-graph samples (e.g. images) with the attributes the
    engine reads from a graph batch.

    Args:
        x (torch.Tensor): inputs :math:`(B, \ldots)`.
        y (torch.Tensor): targets :math:`(B)` or :math:`(B, T)`.
        env (torch.Tensor, optional): environment index per sample.
    """
    def __init__(self, x: Tensor, y: Tensor, env: Optional[Tensor] = None):
        self.x, self.y, self.env = x, y, env

    @property
    def num_graphs(self) -> int:  # the engine's name for the batch size
        return int(self.x.size(0))

    def to(self, device, non_blocking: bool = False) -> 'TensorBatch':
        move = (lambda t: None if t is None else
                t.to(device, non_blocking=non_blocking))
        return TensorBatch(move(self.x), move(self.y), move(self.env))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(x={list(self.x.shape)}, '
                f'y={list(self.y.shape)})')


def as_batch(obj: Any, device: torch.device):
    r"""Moves a loader's output to :obj:`device` as a batch object."""
    if isinstance(obj, (list, tuple)):
        if len(obj) not in (2, 3):
            raise ValueError(f'Expected (x, y) or (x, y, env) samples, got '
                             f'{len(obj)} fields')
        obj = TensorBatch(*obj)
    return obj.to(device)


def _is_graph_dataset(dataset) -> bool:
    from torch_geometric.data.data import BaseData
    from torch_geometric.data import Dataset as PyGDataset
    if isinstance(dataset, PyGDataset):
        return True
    return len(dataset) > 0 and isinstance(dataset[0], BaseData)


def pyg_loader(dataset, *, batch_size: int, shuffle: bool,
               device: Optional[torch.device] = None,
               generator: Optional[torch.Generator] = None) -> Iterable:
    r"""The default factory: PyG's :class:`~torch_geometric.loader.DataLoader`
    for graphs, PyTorch's :class:`~torch.utils.data.DataLoader` for tensor
    samples, in the main process. Batches stay on the CPU; the engine moves
    them to :obj:`device`."""
    if _is_graph_dataset(dataset):
        from torch_geometric.loader import DataLoader
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          generator=generator)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       shuffle=shuffle, generator=generator)


def device_loader(dataset, *, batch_size: int, shuffle: bool,
                  device: Optional[torch.device] = None,
                  generator: Optional[torch.Generator] = None) -> Iterable:
    r"""The device-resident factory: the whole split lives on :obj:`device`
    and batches are gathered by index
    (:class:`pyg_hma.loader.DeviceGraphLoader`, which draws the
    same order as PyG's loader from the same generator). Non-graph datasets
    fall back to :func:`pyg_loader`."""
    if not _is_graph_dataset(dataset):
        return pyg_loader(dataset, batch_size=batch_size, shuffle=shuffle,
                          device=device, generator=generator)
    try:
        from .device import DeviceGraphLoader
    except ImportError as e:
        raise ImportError("The 'device' loader needs "
                          "pyg_hma.loader.device.DeviceGraphLoader, "
                          "which could not be imported") from e
    return DeviceGraphLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                             device=device, generator=generator)


LOADER_FACTORIES: Dict[str, LoaderFactory] = {
    'pyg': pyg_loader,
    'device': device_loader,
}


def get_loader_factory(name_or_factory) -> LoaderFactory:
    r"""Resolves ``'pyg'``, ``'device'`` or a callable to a factory."""
    if callable(name_or_factory):
        return name_or_factory
    if name_or_factory not in LOADER_FACTORIES:
        raise UnknownNameError(f"Unknown loader '{name_or_factory}'; choose "
                               f"one of {', '.join(LOADER_FACTORIES)}")
    return LOADER_FACTORIES[name_or_factory]


def subset(dataset, indices: Sequence[int]):
    r"""The samples :obj:`indices` of :obj:`dataset` (a PyG dataset keeps its
    type, anything else becomes a :class:`~torch.utils.data.Subset`)."""
    from torch_geometric.data import Dataset as PyGDataset
    index = torch.as_tensor(list(indices), dtype=torch.long)
    if isinstance(dataset, PyGDataset):
        return dataset[index]
    return Subset(dataset, index.tolist())


def random_subset(dataset, size: int, seed: int = 0):
    r"""A seeded random subset of at most :obj:`size` samples."""
    if size >= len(dataset):
        return dataset
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(dataset), generator=gen)[:size].sort().values
    return subset(dataset, index.tolist())
