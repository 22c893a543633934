"""A graph mini-batch loader whose whole dataset lives on the compute device.

PyG's :class:`~torch_geometric.loader.DataLoader` collates every mini-batch in
Python from per-graph ``Data`` objects (one ``torch.cat`` per attribute over
``batch_size`` small tensors, plus a ``batch`` vector built with one
``torch.full`` per graph) and the training loop then copies the result to the
GPU. :class:`DeviceGraphLoader` concatenates the dataset **once** into flat
tensors on the device and gathers each mini-batch by index: all index
arithmetic runs on the CPU (in NumPy, on per-graph node and edge counts kept
on the host), one pinned, non-blocking host-to-device copy ships the gather
indices, and each attribute costs one ``index_select`` on the device. Building
a batch never waits for the device (no device-to-host synchronisation). On a
CPU a batch of 32 molecules takes about 0.3 ms instead of PyG's 2-3 ms.

The result is the same :class:`~torch_geometric.data.Batch`, tensor for
tensor, that ``Batch.from_data_list([dataset[i] for i in order])`` builds, and
the loader draws random numbers exactly like ``torch.utils.data.DataLoader``,
so swapping one loader for the other changes neither the batches nor any later
random draw (dropout, ...).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ._pyg_internals import (batch_store, empty_batch, set_collation,
                             set_num_nodes_per_graph)

DeviceLike = Union[str, torch.device]


@dataclass
class _Attr:
    """How one attribute is stored flat and gathered back per batch."""
    key: str
    kind: str  # 'tensor', 'number' (int/float: a tensor) or 'object'
    value: Any  # flat device tensor, or a Python list for 'object'
    dim: int = 0  # concatenation dimension of ``value`` (non-negative)
    group: int = -1  # index into ``DeviceGraphLoader._lengths``
    inc: Optional[np.ndarray] = None  # per-graph increment, None if all 0
    inc_is_num_nodes: bool = False


class DeviceGraphLoader:
    r"""Mini-batches of a graph dataset gathered by index from flat tensors
    stored once on :obj:`device`.

    Equivalent to ``torch_geometric.loader.DataLoader(dataset, batch_size,
    shuffle, drop_last=drop_last, generator=generator)`` followed by
    ``batch.to(device)``: every yielded :class:`~torch_geometric.data.Batch`
    holds the same tensors (``x``, ``edge_index``, ``edge_attr``, ``y``, any
    other attribute, ``batch``, ``ptr``), the same ``num_graphs`` (a Python
    :obj:`int`) and the same ``_slice_dict``/``_inc_dict`` (so
    :meth:`~torch_geometric.data.Batch.to_data_list` works), and the shuffled
    order comes from the same random draws as PyG's loader for the same seed.

    Batch sizes (node and edge counts) are computed on a CPU copy of the
    per-graph counts, so building a batch never synchronises with the device.

    Attributes are concatenated the way PyG's ``collate`` does, following each
    ``Data`` class's :meth:`__cat_dim__` and :meth:`__inc__` (``edge_index``
    is shifted by the batch's node offsets). Supported values are dense
    tensors, Python numbers (collated to a tensor) and other Python objects
    (collated to a list). Every graph must hold the same attributes.

    Args:
        dataset: a sequence (``list``, PyG ``Dataset``, ``Subset``) of
            :class:`~torch_geometric.data.Data` graphs. It is read once.
        batch_size (int): graphs per mini-batch. (default: :obj:`1`)
        shuffle (bool): reshuffle the graphs at every epoch.
            (default: :obj:`False`)
        drop_last (bool): drop the last incomplete batch.
            (default: :obj:`False`)
        device (torch.device or str, optional): where the flat dataset and the
            batches live. (default: the device of the first graph's tensors)
        generator (torch.Generator, optional): CPU generator for shuffling; as
            in ``torch.utils.data.DataLoader``, the global RNG is used when
            :obj:`None`. (default: :obj:`None`)

    Example:
        >>> loader = DeviceGraphLoader(train_graphs, batch_size=32,
        ...                            shuffle=True, device='cuda')
        >>> for batch in loader:
        ...     out = model(batch.x, batch.edge_index, batch.batch,
        ...                 size=batch.num_graphs)
    """
    def __init__(
        self,
        dataset: Sequence[Data],
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        device: Optional[DeviceLike] = None,
        generator: Optional[torch.Generator] = None,
    ):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) \
                or batch_size < 1:
            raise ValueError(f"'batch_size' must be a positive integer "
                             f"(got {batch_size!r})")
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"'generator' must be a torch.Generator "
                                f"(got {type(generator).__name__})")
            if generator.device.type != 'cpu':
                raise ValueError("'generator' must be a CPU generator (the "
                                 "order is drawn on the CPU, as in PyTorch's "
                                 "DataLoader)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.generator = generator
        self._build(dataset, device)

    # Construction ###########################################################

    def _build(self, dataset: Sequence[Data], device: Optional[DeviceLike]):
        num_graphs = len(dataset)
        if num_graphs == 0:
            raise ValueError('DeviceGraphLoader got an empty dataset')
        graphs = [dataset[i] for i in range(num_graphs)]
        first = graphs[0]
        if not isinstance(first, Data):
            raise TypeError(f"DeviceGraphLoader expects torch_geometric "
                            f"'Data' graphs (got {type(first).__name__}; "
                            f"HeteroData needs PyG's DataLoader)")
        base_cls = type(first)
        # The store's own order, which PyG's `collate` follows too.
        keys = list(first.stores[0].keys())
        if device is None:
            device = next((v.device for v in first.values()
                           if isinstance(v, Tensor)), torch.device('cpu'))
        self.device = torch.device(device)
        # Off the CPU, all index arrays of a batch travel in one copy; H2D
        # copies are asynchronous only from pinned memory (from pageable
        # memory CUDA synchronises the stream first).
        self._pack = self.device.type != 'cpu'
        self._pin = self.device.type == 'cuda'

        num_nodes: List[int] = []
        for i, data in enumerate(graphs):
            if type(data) is not base_cls:
                raise TypeError(f"Graph {i} is a {type(data).__name__}, graph "
                                f"0 a {base_cls.__name__}: all graphs must "
                                f"share one class")
            if set(data.keys()) != set(keys):
                raise ValueError(
                    f"Graph {i} has attributes {sorted(data.keys())}, graph 0 "
                    f"has {sorted(keys)}: every graph must hold the same "
                    f"attributes to be batched")
            n = data.num_nodes
            if n is None:
                raise ValueError(f"Cannot infer the number of nodes of graph "
                                 f"{i}: give it 'x' or 'num_nodes'")
            num_nodes.append(int(n))

        # Segment groups: attributes whose per-graph lengths along their
        # concatenation dimension are equal share one gather index. Group 0
        # is the nodes (it also gives `batch` and `ptr`).
        self._lengths: List[Tensor] = [torch.tensor(num_nodes)]
        self._num_graphs = num_graphs
        self._has_num_nodes_key = 'num_nodes' in keys
        self._attrs: List[_Attr] = []
        for key in keys:
            # As PyG's `collate`: `num_nodes` is summed over the batch, a
            # stored `ptr` is dropped (the batch gets its own).
            if key in ('num_nodes', 'ptr'):
                continue
            values = [data[key] for data in graphs]
            self._attrs.append(self._flatten(key, values, graphs))
        self._lengths_np = [n.numpy() for n in self._lengths]
        self._offsets_np = [np.cumsum(n) - n for n in self._lengths_np]
        self._ones = [bool((n == 1).all()) for n in self._lengths_np]
        # An empty batch of the right class, copied for every mini-batch
        # (much cheaper than building one, which inspects signatures on
        # every call).
        self._template = empty_batch(base_cls)

    def _group(self, lengths: List[int]) -> int:
        tensor = torch.tensor(lengths, dtype=torch.long)
        for g, known in enumerate(self._lengths):
            if torch.equal(known, tensor):
                return g
        self._lengths.append(tensor)
        return len(self._lengths) - 1

    def _flatten(self, key: str, values: List[Any],
                 graphs: List[Data]) -> _Attr:
        elem = values[0]
        if isinstance(elem, Tensor):
            if elem.is_sparse or elem.layout != torch.strided or \
                    getattr(elem, 'is_nested', False):
                raise NotImplementedError(
                    f"Attribute '{key}' is a {elem.layout} tensor: "
                    f"DeviceGraphLoader batches dense tensors only")
            for i, value in enumerate(values):
                if not isinstance(value, Tensor) or value.dtype != elem.dtype \
                        or value.dim() != elem.dim():
                    raise ValueError(
                        f"Attribute '{key}' of graph {i} does not match graph "
                        f"0 (type, dtype or number of dimensions differ)")
            cat_dim = graphs[0].__cat_dim__(key, elem)
            if cat_dim is None or elem.dim() == 0:  # stacked along a new dim
                values = [value.unsqueeze(0) for value in values]
                cat_dim = 0
            if not isinstance(cat_dim, int):
                raise NotImplementedError(
                    f"Attribute '{key}' concatenates along {cat_dim!r}: "
                    f"DeviceGraphLoader supports a single dimension")
            dim = cat_dim % values[0].dim()
            try:
                flat = torch.cat(values, dim=dim)
            except RuntimeError as e:
                raise ValueError(f"Attribute '{key}' cannot be concatenated "
                                 f"across graphs: {e}") from None
            lengths = [value.size(dim) for value in values]
            incs = [data.__inc__(key, value)
                    for data, value in zip(graphs, values)]
            if any(isinstance(inc, Tensor) and inc.numel() != 1
                   for inc in incs):
                raise NotImplementedError(
                    f"Attribute '{key}' has a tensor-valued increment: "
                    f"DeviceGraphLoader supports scalar increments only")
            incs = [int(inc) for inc in incs]
            attr = _Attr(key, 'tensor', flat.to(self.device), dim,
                         self._group(lengths))
            if any(incs):
                attr.inc = np.array(incs, dtype=np.int64)
                attr.inc_is_num_nodes = incs == self._lengths[0].tolist()
            return attr
        if isinstance(elem, (int, float)):  # bool included, as in PyG
            # PyG turns numbers into a tensor (`torch.tensor(values)`).
            flat = torch.tensor(values)
            attr = _Attr(key, 'number', flat.to(self.device), 0,
                         self._group([1] * len(values)))
            incs = [int(data.__inc__(key, value))
                    for data, value in zip(graphs, values)]
            if any(incs):
                attr.inc = np.array(incs, dtype=np.int64)
            return attr
        if isinstance(elem, (dict, list, tuple)) and any(
                isinstance(v, Tensor) for v in
                (elem.values() if isinstance(elem, dict) else elem)):
            raise NotImplementedError(
                f"Attribute '{key}' is a container of tensors: "
                f"DeviceGraphLoader batches plain tensors only")
        return _Attr(key, 'object', list(values))

    # Batching ###############################################################

    def __len__(self) -> int:
        if self.drop_last:
            return self._num_graphs // self.batch_size
        return -(-self._num_graphs // self.batch_size)

    @property
    def num_graphs(self) -> int:
        """The number of graphs in the dataset."""
        return self._num_graphs

    def __iter__(self) -> Iterator[Batch]:
        # torch's DataLoader draws a base seed for its workers from the
        # loader's generator (or the global RNG) whenever an iterator is
        # created: drawing it too keeps every later random number (dropout,
        # the next shuffle) identical to the standard loop.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return self._iterate()

    def _iterate(self) -> Iterator[Batch]:
        n, size = self._num_graphs, self.batch_size
        generator = None
        if self.shuffle:
            # As torch's RandomSampler: without a generator it seeds a fresh
            # one from the global RNG (at the first batch).
            generator = self.generator
            if generator is None:
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                generator = torch.Generator()
                generator.manual_seed(seed)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        num_full = n // size
        for b in range(num_full):
            yield self._gather(order[b * size:(b + 1) * size])
        if self.shuffle and self.generator is not None:
            # RandomSampler draws one more permutation (of which it keeps
            # none) once its first one is exhausted.
            torch.randperm(n, generator=generator)
        if n % size and not self.drop_last:
            yield self._gather(order[num_full * size:])

    def collate(self, index: Union[Tensor, Sequence[int]]) -> Batch:
        r"""The mini-batch of the graphs at positions :obj:`index`, in that
        order; equal to ``Batch.from_data_list([dataset[i] for i in index])``
        moved to :obj:`device`.

        Args:
            index (LongTensor or sequence of int): graph positions (on the
                CPU; a device tensor would force a synchronisation).
        """
        idx = torch.as_tensor(index, dtype=torch.long)
        if idx.device.type != 'cpu':
            idx = idx.cpu()
        if idx.dim() != 1 or idx.numel() == 0:
            raise ValueError(f"'index' must be a non-empty 1-D sequence of "
                             f"graph positions (got shape "
                             f"{tuple(idx.shape)})")
        n = self._num_graphs
        if int(idx.min()) < -n or int(idx.max()) >= n:
            raise IndexError(f"Graph index out of range for a dataset of "
                             f"{n} graphs")
        return self._gather(idx % n)

    def _gather(self, idx: Tensor) -> Batch:
        # `idx`: valid, non-negative CPU positions. The index arithmetic runs
        # in NumPy, whose per-call cost on vectors of a few hundred entries
        # is a fraction of PyTorch's; the results are shared with tensors
        # without copies (`torch.from_numpy`).
        num = idx.numel()
        pos = idx.numpy()
        arange = np.arange(num + 1, dtype=np.int64)  # graph-level `ptr`

        host: List[np.ndarray] = [pos]  # index arrays for the device
        ptrs, gathers = [], []
        for g, (lengths, offsets) in enumerate(zip(self._lengths_np,
                                                    self._offsets_np)):
            if self._ones[g]:  # one row per graph: gather by `idx` itself
                ptrs.append((lengths[:num], arange, num))
                gathers.append(0)
                continue
            counts = lengths[pos]
            ptr = np.zeros(num + 1, dtype=np.int64)
            np.cumsum(counts, out=ptr[1:])
            total = int(ptr[-1])
            ptrs.append((counts, ptr, total))
            gathers.append(len(host))
            host.append(np.arange(total, dtype=np.int64) +
                        np.repeat(offsets[pos] - ptr[:-1], counts))
        node_counts, node_ptr, num_nodes = ptrs[0]
        batch_at = len(host)  # positions of `batch` and `ptr` in `host`
        host.append(np.repeat(np.arange(num, dtype=np.int64), node_counts))
        host.append(node_ptr)
        shifts, inc_dict = {}, {}
        zeros = torch.zeros(num, dtype=torch.long)  # PyG's zero increments
        for attr in self._attrs:
            if attr.kind == 'object':
                inc_dict[attr.key] = None
            elif attr.inc is None:
                inc_dict[attr.key] = zeros
            else:
                counts, _, total = ptrs[attr.group]
                if attr.inc_is_num_nodes:
                    cum = node_ptr[:-1]
                else:
                    inc = attr.inc[pos]
                    cum = np.cumsum(inc) - inc
                inc_dict[attr.key] = torch.from_numpy(cum)
                shifts[attr.key] = len(host)
                host.append(np.repeat(cum, counts))
        dev = self._to_device(host)

        out = copy.copy(self._template)
        store = batch_store(out)
        slice_dict = {}
        for attr in self._attrs:
            if attr.kind == 'object':
                store[attr.key] = [attr.value[i] for i in pos.tolist()]
                slice_dict[attr.key] = torch.from_numpy(arange)
                continue
            slice_dict[attr.key] = torch.from_numpy(ptrs[attr.group][1])
            value = attr.value.index_select(attr.dim, dev[gathers[attr.group]])
            if attr.key in shifts:
                shift = dev[shifts[attr.key]].to(value.dtype)
                if attr.dim != value.dim() - 1:  # broadcast along `dim`
                    shift = shift.view([-1] + [1] *
                                       (value.dim() - attr.dim - 1))
                value = value + shift
            store[attr.key] = value
        if self._has_num_nodes_key:
            set_num_nodes_per_graph(store, node_counts.tolist())
            store.num_nodes = num_nodes
        store['batch'] = dev[batch_at]
        store['ptr'] = dev[batch_at + 1]
        set_collation(out, num, slice_dict, inc_dict)
        return out

    def _to_device(self, host: List[np.ndarray]) -> List[Tensor]:
        if not self._pack:
            return [torch.from_numpy(a) for a in host]
        # One copy for everything: pack into a pinned buffer, copy without
        # blocking the host, split into views on the device.
        sizes = [a.size for a in host]
        pack = torch.empty(sum(sizes), dtype=torch.long, pin_memory=self._pin)
        np.concatenate(host, out=pack.numpy())
        return list(pack.to(self.device, non_blocking=True).split(sizes))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self._num_graphs} graphs, '
                f'batch_size={self.batch_size}, shuffle={self.shuffle}, '
                f'device={self.device})')
