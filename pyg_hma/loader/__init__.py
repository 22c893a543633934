r"""Batching: the loader factories the engine calls
(:mod:`~pyg_hma.loader.factories`), the device-resident graph loader
(:mod:`~pyg_hma.loader.device`) and static-shape padding
(:mod:`~pyg_hma.loader.padding`). Their accesses to PyG internals live in
:mod:`pyg_hma.loader._pyg_internals`."""
from .device import DeviceGraphLoader
from .factories import (LOADER_FACTORIES, LoaderFactory, TensorBatch,
                        as_batch, device_loader, get_loader_factory,
                        pyg_loader, random_subset, subset)
from .padding import PaddedLoader, batch_sizes, pad_batch

__all__ = [
    'LoaderFactory',
    'LOADER_FACTORIES',
    'get_loader_factory',
    'pyg_loader',
    'device_loader',
    'as_batch',
    'TensorBatch',
    'subset',
    'random_subset',
    'DeviceGraphLoader',
    'PaddedLoader',
    'pad_batch',
    'batch_sizes',
]
