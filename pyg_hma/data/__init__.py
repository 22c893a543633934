from ._io import (ChecksumError, MissingDataError, default_root, find_mirror,
                  mirror_file)
from .registry import DatasetSplits, available_datasets, load_dataset

__all__ = [
    'DatasetSplits',
    'load_dataset',
    'available_datasets',
    'find_mirror',
    'mirror_file',
    'default_root',
    'MissingDataError',
    'ChecksumError',
]
