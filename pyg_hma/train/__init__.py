r"""The training engine (:func:`fit`) and the benchmark machinery shared by
the runners in ``benchmarks/``."""
from .benchmark import Protocol, main, run_benchmark
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
    'Protocol',
    'run_benchmark',
    'main',
    'compute_metric',
]
