import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks'


def runner_module(name: str):
    r"""The runner script ``benchmarks/NAME.py`` as a module (its
    ``PROTOCOLS`` and ``main``)."""
    spec = importlib.util.spec_from_file_location(f'bench_{name}',
                                                  BENCH / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def one_thread():
    r"""Runs a test module with one torch thread. The models in the tests
    are tiny: with two OpenMP threads on a busy 2-core machine a step can
    take 30x longer than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def proteins_subset(tmp_path_factory, train: int, evaluate: int):
    r"""PROTEINS size-shift splits cut to small random subsets (a small real
    problem), processed once per session into the shared temporary root;
    skips the test without the offline mirror."""
    import dataclasses
    from pyg_hma.data import find_mirror, load_dataset
    from pyg_hma.train.loaders import random_subset
    if find_mirror() is None:
        pytest.skip('needs the offline data mirror (../shared/data)')
    root = tmp_path_factory.getbasetemp() / 'pyg_hma_data'
    splits = load_dataset('PROTEINS', root=root)
    return dataclasses.replace(
        splits, train=random_subset(splits.train, train, 0),
        val=random_subset(splits.val, evaluate, 0),
        test=random_subset(splits.test, evaluate, 0))
