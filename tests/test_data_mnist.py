"""Colored MNIST: IRM's environments, statistically and on the real data."""
import numpy as np
import pytest
import torch

from pyg_hma.data import find_mirror, load_dataset
from pyg_hma.data.mnist import (colored_mnist_splits, load_mnist_train,
                                read_idx)

N, POOL = 12000, 10000


@pytest.fixture(scope='module')
def synthetic():
    """Images whose 2x2 pixels encode their index, so every output image can
    be traced back to its source image."""
    ids = torch.arange(N)
    images = torch.stack([ids % 251 + 1, ids // 251 + 1, ids % 7 + 1,
                          torch.full_like(ids, 255)], 1)
    images = images.view(N, 2, 2).to(torch.uint8)
    digits = torch.from_numpy(np.random.default_rng(0).integers(0, 10, N))
    return images, digits


def _source_ids(split):
    img = (split.x.amax(1) * 255).round().long().view(len(split), 4)
    return ((img[:, 0] - 1) + 251 * (img[:, 1] - 1)).tolist()


def test_environments_follow_irm(synthetic):
    images, digits = synthetic
    train, val, tests = colored_mnist_splits(images, digits, seed=0,
                                             train_envs=(0.1, 0.2),
                                             test_env=0.9,
                                             num_train_pool=POOL)
    per_env = POOL // 2
    assert len(train) == 2 * (per_env - per_env // 10)
    assert len(val) == 2 * (per_env // 10)
    assert {k: len(v) for k, v in tests.items()} == {'reversed': N - POOL,
                                                     'gray': N - POOL}
    # Binary label digit < 5 with 25% label noise (4500 images per env: a
    # tolerance of 0.03 is about 4.6 standard deviations).
    for env in (0, 1):
        mask = train.env == env
        noise = (train.y[mask] != (train.digit[mask] < 5).long())
        assert noise.float().mean().item() == pytest.approx(0.25, abs=0.03)
    # Colour agrees with the label with probability 1 - p.
    for env, p in ((0, 0.1), (1, 0.2)):
        mask = train.env == env
        agree = (train.color[mask] == train.y[mask]).float().mean().item()
        assert agree == pytest.approx(1 - p, abs=0.03)
    rev = tests['reversed']
    agree = (rev.color == rev.y).float().mean().item()
    assert agree == pytest.approx(0.1, abs=0.03)
    # The image sits on the channel of its colour; the other is empty.
    rows = torch.arange(len(train))
    assert torch.all(train.x[rows, 1 - train.color] == 0)
    assert torch.all(train.x[rows, train.color] > 0)
    # Gray: both channels equal, no colour; same images and labels as
    # 'reversed'.
    gray = tests['gray']
    assert torch.equal(gray.x[:, 0], gray.x[:, 1])
    assert torch.all(gray.color == -1)
    assert torch.equal(gray.y, rev.y) and torch.equal(gray.digit, rev.digit)
    assert (sorted(set(gray.env.tolist())), sorted(set(rev.env.tolist()))) \
        == ([3], [2])


def test_splits_are_disjoint_and_tests_use_the_tail(synthetic):
    images, digits = synthetic
    train, val, tests = colored_mnist_splits(images, digits, seed=0,
                                             num_train_pool=POOL)
    ids = {k: _source_ids(v) for k, v in
           {'train': train, 'val': val, **tests}.items()}
    assert sorted(ids['train'] + ids['val']) == list(range(POOL))
    assert sorted(ids['reversed']) == list(range(POOL, N))
    assert sorted(ids['gray']) == list(range(POOL, N))
    # The digits travel with their images.
    assert torch.equal(train.digit, digits[ids['train']])


def test_seeds(synthetic):
    images, digits = synthetic
    a, b, c = (colored_mnist_splits(images, digits, seed=s,
                                    num_train_pool=POOL) for s in (0, 0, 1))
    assert torch.equal(a[0].x, b[0].x) and torch.equal(a[0].y, b[0].y)
    assert torch.equal(a[2]['reversed'].x, b[2]['reversed'].x)
    assert not torch.equal(a[0].y, c[0].y)


def test_bad_arguments(synthetic, tmp_path):
    images, digits = synthetic
    with pytest.raises(ValueError, match='probabilities'):
        colored_mnist_splits(images, digits, train_envs=(0.1, 1.5),
                             num_train_pool=POOL)
    with pytest.raises(ValueError, match='at least one'):
        colored_mnist_splits(images, digits, train_envs=(),
                             num_train_pool=POOL)
    with pytest.raises(ValueError, match='num_train_pool'):
        colored_mnist_splits(images, digits)  # 50000 > 12000 images
    with pytest.raises(ValueError, match='resolution'):
        load_dataset('CMNIST-28', root=tmp_path, resolution=14)


def test_read_idx_rejects_truncated_files(tmp_path):
    path = tmp_path / 'bad.idx1-ubyte'
    path.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, 'big') +
                     bytes(range(5)))
    with pytest.raises(ValueError, match='truncated'):
        read_idx(path)


# ---------------------------------------------------------------------------
# The real data
# ---------------------------------------------------------------------------

needs_mirror = pytest.mark.skipif(find_mirror() is None,
                                  reason='no offline data mirror')


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp('mnist_cache')


@needs_mirror
def test_real_colored_mnist(cache):
    splits = load_dataset('CMNIST', root=cache)
    assert splits.sizes() == {'train': 45000, 'val': 5000,
                              'reversed': 10000, 'gray': 10000}
    assert splits.train.x.shape == (45000, 2, 14, 14)
    assert splits.num_features == 2 * 14 * 14 and splits.task == 'image'
    images, digits, _ = load_mnist_train(cache)
    # The test images are MNIST's training images 50000.., in order.
    assert torch.equal(splits.test['gray'].digit, digits[50000:])
    assert torch.equal(splits.test['gray'].x[:, 0] * 255,
                       images[50000:, ::2, ::2].float())
    train = splits.train
    noise = (train.y != (train.digit < 5).long()).float().mean().item()
    assert noise == pytest.approx(0.25, abs=0.015)
    for env, p in ((0, 0.1), (1, 0.2)):
        mask = train.env == env
        agree = (train.color[mask] == train.y[mask]).float().mean().item()
        assert agree == pytest.approx(1 - p, abs=0.015)


@needs_mirror
def test_real_colored_mnist_28_matches_14(cache):
    # Same seed, same draws: the 14x14 images are the 28x28 ones subsampled.
    small = load_dataset('CMNIST-14', root=cache).val
    full = load_dataset('CMNIST-28', root=cache).val
    assert full.x.shape == (5000, 2, 28, 28)
    assert torch.equal(full.x[:, :, ::2, ::2], small.x)
    assert torch.equal(full.y, small.y)
