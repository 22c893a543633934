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
    from pyg_hma.loader import random_subset
    if find_mirror() is None:
        pytest.skip('needs the offline data mirror (../shared/data)')
    root = tmp_path_factory.getbasetemp() / 'pyg_hma_data'
    splits = load_dataset('PROTEINS', root=root)
    return dataclasses.replace(
        splits, train=random_subset(splits.train, train, 0),
        val=random_subset(splits.val, evaluate, 0),
        test=random_subset(splits.test, evaluate, 0))


@pytest.fixture
def test_device():
    r"""The device of the device checks: ``$PYG_HMA_TEST_DEVICE`` (default
    ``cpu``; ``cuda`` on a GPU machine, as ``benchmarks/gpu_check.sh`` runs
    them)."""
    import os
    device = torch.device(os.environ.get('PYG_HMA_TEST_DEVICE', 'cpu'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        pytest.skip('PYG_HMA_TEST_DEVICE asks for CUDA, which is missing')
    return device


def molecule_model(backbone, method, dropout=0.0, hma_dropout=0.0,
                   residual=False):
    r"""A factory of table 3's model on :func:`molecules` (OGB's atom and
    bond encoders, one logit for BCE), small: 3 layers of 16, HMA with a
    memory of 32 and 4 slots per class."""
    from pyg_hma.models import build_model
    return lambda: build_model(
        backbone, method, num_classes=2, out_channels=1,
        backbone_kwargs=dict(hidden_channels=16, num_layers=3,
                             dropout=dropout, residual=residual,
                             atom_encoder=True, bond_encoder=True),
        hma_kwargs=dict(memory_size=32, slots_per_class=4, label_dim=8,
                        dropout=hma_dropout, check_inputs=False))


def image_model(backbone, method, hma_dropout=0.0):
    r"""A factory of Colored MNIST's nets on :math:`2 \times 8 \times 8`
    images, small: the MLP 16 wide, the CNN with 4 channels, HMA with a
    memory of 32 and 4 slots per class."""
    from pyg_hma.models import build_model
    width = dict(mlp=dict(hidden_channels=16), cnn=dict(channels=4))
    return lambda: build_model(
        backbone, method, num_classes=2, input_shape=(2, 8, 8),
        backbone_kwargs=width[backbone],
        hma_kwargs=dict(memory_size=32, slots_per_class=4, label_dim=16,
                        dropout=hma_dropout, check_inputs=False))


def molecules(num, seed=0):
    r"""Random OGB-like molecules: :obj:`num` graphs of 3-11 atoms with
    integer atom and bond features in OGB's vocabularies and labels
    ``[[i % 2]]``."""
    from torch_geometric.data import Data
    from pyg_hma.models.encoders import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num):
        n = int(torch.randint(3, 12, (1, ), generator=gen))
        e = int(torch.randint(2, 3 * n, (1, ), generator=gen))
        x = torch.stack([torch.randint(d, (n, ), generator=gen)
                         for d in ATOM_FEATURE_DIMS], 1)
        edge_attr = torch.stack([torch.randint(d, (e, ), generator=gen)
                                 for d in BOND_FEATURE_DIMS], 1)
        graphs.append(Data(x=x, edge_index=torch.randint(n, (2, e),
                                                         generator=gen),
                           edge_attr=edge_attr, y=torch.tensor([[i % 2]])))
    return graphs
