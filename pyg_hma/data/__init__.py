r"""The benchmark datasets: :func:`load_dataset` by name.

Importing the package imports the loader modules, each of which registers
its datasets in :data:`~pyg_hma.data.registry.DATASETS`.
"""
# Each loader module registers its datasets; the import order is the order
# of `available_datasets()` (and of `python -m pyg_hma.data list`).
from . import ogb_mol, tu, text, mnist  # noqa: F401, I001
from .cache import default_root
from .mirror import ChecksumError, MissingDataError, find_mirror, mirror_file
from .registry import (DATASETS, DatasetSpec, available_datasets,
                       load_dataset)
from .splits import DatasetSplits

__all__ = [
    'DatasetSplits',
    'DatasetSpec',
    'DATASETS',
    'load_dataset',
    'available_datasets',
    'find_mirror',
    'mirror_file',
    'default_root',
    'MissingDataError',
    'ChecksumError',
]
