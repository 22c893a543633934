r"""The dataset registry: one :class:`DatasetSpec` per benchmark dataset,
registered in :data:`DATASETS` by the module that loads it (``tu``,
``text``, ``ogb_mol``, ``mnist``; importing :mod:`pyg_hma.data` imports
them, and they import their heavy dependencies (spaCy, RDKit, ogb, the
sentence encoder) only inside the functions that need them).

:func:`load_dataset`, :func:`available_datasets` and
``python -m pyg_hma.data list`` read the registry only; adding a dataset is
one :meth:`DATASETS.register <pyg_hma.registry.Registry.register>` call next
to its loader (see ``docs/extending.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from ..files import PathLike
from ..registry import Registry, UnknownNameError
from .exported import default_exported_dir, exported_file, load_exported
from .splits import DatasetSplits

Loader = Callable[..., DatasetSplits]


@dataclass(frozen=True)
class DatasetSpec:
    r"""One benchmark dataset.

    Args:
        name: the name the runners and :func:`load_dataset` use.
        loader: called as ``loader(name, root=..., mirror=..., seed=...,
            **kwargs)``; returns the :class:`DatasetSplits`.
        metric: ``'mcc'``, ``'accuracy'`` or ``'rocauc'``.
        task: ``'graph'`` or ``'image'``.
        table: the paper's table of this dataset (``None``: not in it).
    """
    name: str
    loader: Loader
    metric: str
    task: str = 'graph'
    table: Optional[int] = None


DATASETS: Registry[DatasetSpec] = Registry('dataset')


def dataset_spec(name: str, loader: Loader,
                 what: str = 'dataset') -> DatasetSpec:
    r"""The spec of :obj:`name`, which :obj:`loader` must load (for a loader
    called directly).

    Args:
        name: the dataset name.
        loader: the calling loader.
        what: the loader's kind of dataset, for the error message.

    Raises:
        UnknownNameError: :obj:`name` is not one of :obj:`loader`'s datasets
            (the message lists them).
    """
    spec = DATASETS.get(name)
    if spec is None or spec.loader is not loader:
        names = DATASETS.names(lambda s: s.loader is loader)
        raise UnknownNameError(f"Unknown {what} {name!r}; choose one of "
                               f"{', '.join(names)}")
    return spec


def available_datasets() -> Tuple[str, ...]:
    r"""The registered dataset names, in registration order."""
    return tuple(DATASETS)


def load_dataset(name: str, root: Optional[PathLike] = None,
                 mirror: Optional[PathLike] = None, seed: int = 0,
                 exported: Optional[PathLike] = None,
                 **kwargs) -> DatasetSplits:
    """Loads (processing on first use) a benchmark dataset and its splits.

    Args:
        name: one of :func:`available_datasets`.
        root: cache folder (default ``$PYG_HMA_ROOT`` or ``~/.cache/pyg_hma``).
        mirror: offline mirror folder (default ``$PYG_HMA_MIRROR``, else
            ``../shared/data`` beside the working directory when present, else
            download).
        seed: seed of the split where the protocol shuffles.
        exported: a folder of exported splits (default
            ``$PYG_HMA_EXPORTED``): read ``NAME-seedS.pt`` from it instead of
            processing (see :mod:`pyg_hma.data.exported`; loader arguments
            in :obj:`kwargs` must be those of the export).

    Raises:
        UnknownNameError: :obj:`name` is not registered.
    """
    spec = DATASETS[name]
    exported = exported or default_exported_dir()
    if exported is not None:
        return load_exported(exported_file(exported, name, seed))
    return spec.loader(name, root=root, mirror=mirror, seed=seed, **kwargs)
