r"""The training engine (:func:`fit`), shared by the runners in
``benchmarks/`` (their library: :mod:`pyg_hma.runners`)."""
from .engine import (BestTracker, FitResult, TrainConfig, evaluate, fit,
                     predict, resolve_device, seed_everything)
from .metrics import compute_metric
from .seed_batch import fit_seeds, seed_batch_support

__all__ = [
    'fit',
    'fit_seeds',
    'seed_batch_support',
    'TrainConfig',
    'FitResult',
    'BestTracker',
    'evaluate',
    'predict',
    'seed_everything',
    'resolve_device',
    'compute_metric',
]
