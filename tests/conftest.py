import pytest
import torch


@pytest.fixture(scope='module')
def one_thread():
    r"""Runs a test module with one torch thread. The models in the tests
    are tiny: with two OpenMP threads on a busy 2-core machine a step can
    take 30x longer than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
