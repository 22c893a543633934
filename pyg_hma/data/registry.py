"""One entry point for every benchmark dataset: ``load_dataset(name, ...)``.

Each loader lives in its own module and is imported lazily, so that using the
TU loaders never imports spaCy or RDKit.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

from ..registry import UnknownNameError
from ._io import PathLike


@dataclass
class DatasetSplits:
    """A dataset cut into the splits of its benchmark protocol.

    Attributes:
        name: the dataset's name as the runners spell it.
        train, val: sequences of samples (PyG ``Data`` for graphs, a
            ``TensorDataset``-like for images).
        test: one test split, or a ``dict`` of named test splits
            (e.g. Colored MNIST's ``'reversed'`` and ``'gray'``).
        num_features: input feature size (node features for graphs).
        num_classes: number of classes (``2`` for binary tasks).
        metric: ``'mcc'``, ``'accuracy'`` or ``'rocauc'``.
        task: ``'graph'`` or ``'image'``.
        num_edge_features: edge feature size (0 when none; OGB molecules use
            integer bond features read by ``BondEncoder``).
        info: statistics, thresholds and provenance printed by ``prepare``.
    """
    name: str
    train: Any
    val: Any
    test: Any
    num_features: int
    num_classes: int
    metric: str
    task: str = 'graph'
    num_edge_features: int = 0
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def tests(self) -> Dict[str, Any]:
        return self.test if isinstance(self.test, dict) else {'test': self.test}

    def sizes(self) -> Dict[str, int]:
        out = {'train': len(self.train), 'val': len(self.val)}
        for key, split in self.tests.items():
            out[key] = len(split)
        return out


# name -> "module:function"; each function is called as
# fn(name, root=..., mirror=..., seed=..., **kwargs) -> DatasetSplits
_LOADERS: Dict[str, str] = {
    **{n: 'pyg_hma.data.ogb_mol:load_ogb_mol'
       for n in ('ogbg-molbace', 'ogbg-molbbbp', 'ogbg-molhiv')},
    **{n: 'pyg_hma.data.tu:load_tu_size_shift'
       for n in ('NCI1', 'NCI109', 'PROTEINS', 'DD')},
    **{f'{n}-ID': 'pyg_hma.data.tu:load_tu_in_distribution'
       for n in ('NCI1', 'NCI109', 'PROTEINS', 'DD')},
    **{n: 'pyg_hma.data.tu:load_tu_in_distribution'
       for n in ('IMDB-BINARY', 'IMDB-MULTI', 'REDDIT-BINARY',
                 'REDDIT-MULTI-5K', 'REDDIT-MULTI-12K')},
    **{n: 'pyg_hma.data.text:load_text_graphs'
       for n in ('Graph-SST5', 'Graph-Twitter')},
    **{n: 'pyg_hma.data.mnist:load_colored_mnist'
       for n in ('CMNIST', 'CMNIST-14', 'CMNIST-28')},
}


def available_datasets() -> Sequence[str]:
    return tuple(_LOADERS)


def _check_name(name: str):
    if name not in _LOADERS:
        close = [n for n in _LOADERS if n.lower() == name.lower()]
        hint = f" Did you mean '{close[0]}'?" if close else ''
        raise UnknownNameError(f"Unknown dataset '{name}'.{hint} Available: "
                               f"{', '.join(_LOADERS)}")


def _resolve(name: str) -> Callable[..., DatasetSplits]:
    _check_name(name)
    module, fn = _LOADERS[name].split(':')
    return getattr(importlib.import_module(module), fn)


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
    """
    from .exported import default_exported_dir, exported_file, load_exported
    exported = exported or default_exported_dir()
    if exported is not None:
        _check_name(name)  # without importing the dataset's loader
        return load_exported(exported_file(exported, name, seed))
    return _resolve(name)(name, root=root, mirror=mirror, seed=seed, **kwargs)
