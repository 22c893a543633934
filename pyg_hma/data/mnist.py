r"""Colored MNIST, the protocol of IRM (Arjovsky et al., 2019, the
``colored_mnist`` example of facebookresearch/InvariantRiskMinimization).

From the 60000 MNIST training images:

* the first 50000 are shuffled (seeded) and dealt round-robin into the
  training environments, one per entry of ``train_envs`` (IRM: two of 25000
  with colour-flip probabilities 0.2 and 0.1); the last 10000 are the test
  images (IRM's ``mnist_val``). The official 10000 test images are not used,
  as in IRM;
* binary label ``y = (digit < 5)``, then flipped with probability 0.25;
* colour ``c = y`` flipped with the environment's probability; the image is
  put on channel ``c`` of two channels (0 = red, 1 = green) and the other
  channel is zero;
* images are scaled to ``[0, 1]``; 14x14 images take every second pixel
  (``[:, ::2, ::2]``, as IRM does), 28x28 keep the full image.

IRM has no validation split. Here the first ``val_ratio`` (10%) of each
training environment's shuffled images are held out as a validation split
from the training distribution; the rest is the training split. Two test
splits are built from the same 10000 test images and the same noisy labels:
``'reversed'`` (colour flipped with probability ``test_env`` = 0.9) and
``'gray'`` (the image on both channels: no colour signal at all).

Environment ids: training environments are ``0..len(train_envs)-1`` (also in
the validation split), ``'reversed'`` is ``len(train_envs)``, ``'gray'`` is
``len(train_envs) + 1``.
"""
from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..files import PathLike
from .cache import (load_cache, mark_complete, read_cache_file, recipe_dir,
                    resolve_root)
from .mirror import MissingDataError, find_mirror, mirror_file
from .registry import DATASETS, DatasetSpec, dataset_spec
from .splits import DatasetSplits

# Bump when the cached MNIST arrays change. v2: read with weights_only=True.
RECIPE = 'mnist-v2'

NUM_TRAIN_POOL = 50000  # IRM: mnist.data[:50000] for training, the rest test
LABEL_NOISE = 0.25
GRAY_COLOR = -1

# name -> (mirror path, file name of the usual download)
_FILES = {
    'images': ('mnist/train-images.idx3-ubyte.gz',
               'train-images-idx3-ubyte.gz'),
    'labels': ('mnist/train-labels.idx1-ubyte.gz',
               'train-labels-idx1-ubyte.gz'),
}
# The hosts torchvision downloads MNIST from, tried in order.
URLS = ('https://ossci-datasets.s3.amazonaws.com/mnist',
        'http://yann.lecun.com/exdb/mnist')

_RESOLUTIONS = {'CMNIST': 14, 'CMNIST-14': 14, 'CMNIST-28': 28}


class ColoredMNIST(TensorDataset):
    r"""A Colored MNIST split; items are ``(x, y, env)``.

    Attributes:
        x: images, ``float`` ``[N, 2, H, W]`` in ``[0, 1]``.
        y: noisy binary labels, ``long`` ``[N]``.
        env: environment ids, ``long`` ``[N]``.
        color: colour channel of each image (``-1`` for gray), ``long``
            ``[N]``.
        digit: the original MNIST digit, ``long`` ``[N]``.
    """
    def __init__(self, x: torch.Tensor, y: torch.Tensor, env: torch.Tensor,
                 color: torch.Tensor, digit: torch.Tensor):
        super().__init__(x, y, env)
        self.color = color
        self.digit = digit

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        return self.tensors[1]

    @property
    def env(self) -> torch.Tensor:
        return self.tensors[2]

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self)}, '
                f'x={list(self.x.shape)})')


# ---------------------------------------------------------------------------
# Raw MNIST
# ---------------------------------------------------------------------------

def read_idx(path: PathLike) -> np.ndarray:
    """Reads a (gzipped) IDX file of unsigned bytes into an array."""
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"'{path}' is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big')
                  for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"'{path}' holds {data.size} values, its header "
                         f"announces {shape}: the file is truncated")
    return data.reshape(shape)


def _download(folder: Path) -> Tuple[Dict[str, Path], str]:
    from torch_geometric.data import download_url
    paths, used = {}, []
    for key, (_, filename) in _FILES.items():
        errors = []
        for base in URLS:
            try:
                paths[key] = Path(download_url(f'{base}/{filename}',
                                               str(folder), log=True))
                used.append(f'{base}/{filename}')
                break
            except Exception as e:  # try the next host
                errors.append(f'{base}: {e}')
        else:
            raise MissingDataError(
                f"Could not download MNIST's '{filename}' "
                f"({'; '.join(errors)}). Place the file in '{folder}' or "
                f"point $PYG_HMA_MIRROR at a mirror holding "
                f"'{_FILES[key][0]}'.")
    return paths, 'download: ' + ', '.join(used)


def load_mnist_train(root: Optional[PathLike] = None,
                     mirror: Optional[PathLike] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, str]:
    r"""The 60000 MNIST training images (``uint8`` ``[60000, 28, 28]``) and
    digits, decoded once into ``recipe_dir(root, 'MNIST', RECIPE)`` (and
    again, once, when that cache cannot be read).

    Returns:
        images, digits, and where the files came from.
    """
    root = resolve_root(root)

    def build(folder: Path) -> None:
        mirror_root = find_mirror(mirror)
        if mirror_root is not None:
            paths = {key: mirror_file(rel, mirror_root, what='MNIST')
                     for key, (rel, _) in _FILES.items()}
            source = f"mirror: {paths['images'].parent}"
        else:
            paths, source = _download(root / 'MNIST' / 'raw')
        images, digits = read_idx(paths['images']), read_idx(paths['labels'])
        if images.shape != (60000, 28, 28) or digits.shape != (60000, ):
            raise ValueError(
                f'Unexpected MNIST training arrays: images {images.shape}, '
                f'labels {digits.shape}; expected (60000, 28, 28), (60000,)')
        folder.mkdir()
        torch.save({'images': torch.from_numpy(images.copy()),
                    'digits': torch.from_numpy(digits.copy()),
                    'source': source}, folder / 'train.pt')
        mark_complete(folder, RECIPE)

    out = load_cache(recipe_dir(root, 'MNIST', RECIPE), build,
                     lambda folder: read_cache_file(folder, 'train.pt',
                                                    'processed MNIST'))
    return out['images'], out['digits'].long(), out['source']


# ---------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------

def _bernoulli(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < p).long()


def colorize(images: torch.Tensor, y: torch.Tensor, color_flip: float,
             generator: torch.Generator, gray: bool = False
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Colours images by their labels as IRM does.

    Args:
        images: ``uint8`` ``[N, H, W]``.
        y: binary labels ``[N]`` (already noisy).
        color_flip: probability that the colour disagrees with the label.
        generator: the random generator.
        gray: put the image on both channels instead (no colour).

    Returns:
        ``float`` images ``[N, 2, H, W]`` in ``[0, 1]`` and the colour of
        each image (``-1`` when gray).
    """
    x = images.float().div_(255.)
    if gray:
        return (torch.stack([x, x], dim=1),
                torch.full_like(y, GRAY_COLOR))
    color = y ^ _bernoulli(color_flip, len(y), generator)
    out = torch.zeros(len(x), 2, *x.shape[1:])
    out[torch.arange(len(x)), color] = x
    return out, color


def noisy_labels(digits: torch.Tensor, generator: torch.Generator,
                 noise: float = LABEL_NOISE) -> torch.Tensor:
    """IRM's label: ``digit < 5``, flipped with probability ``noise``."""
    return (digits < 5).long() ^ _bernoulli(noise, len(digits), generator)


def colored_mnist_splits(images: torch.Tensor, digits: torch.Tensor,
                         seed: int = 0,
                         train_envs: Sequence[float] = (0.1, 0.2),
                         test_env: float = 0.9, val_ratio: float = 0.1,
                         num_train_pool: int = NUM_TRAIN_POOL
                         ) -> Tuple[ColoredMNIST, ColoredMNIST,
                                    Dict[str, ColoredMNIST]]:
    r"""Builds Colored MNIST's splits from grayscale images (see the module
    doc). Deterministic given ``seed``.

    Args:
        images: ``uint8`` ``[N, H, W]`` (already at the target resolution).
        digits: ``[N]`` digits 0-9.
        seed: seed of the shuffle, the label noise and the colours.
        train_envs: colour-flip probability of each training environment.
        test_env: colour-flip probability of the ``'reversed'`` test split.
        val_ratio: share of each training environment held out for
            validation.
        num_train_pool: images ``[:num_train_pool]`` feed the training
            environments, the rest the test splits.

    Returns:
        ``(train, val, {'reversed': ..., 'gray': ...})``.
    """
    if len(train_envs) == 0:
        raise ValueError('train_envs needs at least one environment')
    for p in [*train_envs, test_env]:
        if not 0. <= p <= 1.:
            raise ValueError(f'Colour-flip probabilities must lie in [0, 1], '
                             f'got {p}')
    if not 0. <= val_ratio < 1.:
        raise ValueError(f'val_ratio must lie in [0, 1), got {val_ratio}')
    if not 0 < num_train_pool < len(images):
        raise ValueError(f'num_train_pool={num_train_pool} must leave images '
                         f'for both training and test ({len(images)} in all)')

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_train_pool, generator=gen)
    train, val = [], []
    for env_id, flip in enumerate(train_envs):
        idx = perm[env_id::len(train_envs)]
        y = noisy_labels(digits[idx], gen)
        x, color = colorize(images[idx], y, flip, gen)
        env = torch.full_like(y, env_id)
        num_val = int(val_ratio * len(idx))
        parts = (x, y, env, color, digits[idx])
        val.append([t[:num_val] for t in parts])
        train.append([t[num_val:] for t in parts])

    def cat(chunks):
        return ColoredMNIST(*[torch.cat(ts) for ts in zip(*chunks)])

    test_idx = torch.arange(num_train_pool, len(images))
    y = noisy_labels(digits[test_idx], gen)
    tests = {}
    for offset, (key, gray) in enumerate([('reversed', False),
                                          ('gray', True)]):
        x, color = colorize(images[test_idx], y, test_env, gen, gray=gray)
        env = torch.full_like(y, len(train_envs) + offset)
        tests[key] = ColoredMNIST(x, y, env, color, digits[test_idx])
    return cat(train), cat(val), tests


def _agreement(split: ColoredMNIST) -> Optional[float]:
    colored = split.color != GRAY_COLOR
    if not bool(colored.any()):
        return None
    return round(float((split.color[colored] == split.y[colored])
                       .float().mean()), 4)


def load_colored_mnist(name: str, root: Optional[PathLike] = None,
                       mirror: Optional[PathLike] = None, seed: int = 0, *,
                       train_envs: Sequence[float] = (0.1, 0.2),
                       test_env: float = 0.9,
                       resolution: Optional[int] = None,
                       val_ratio: float = 0.1) -> DatasetSplits:
    r"""Colored MNIST under IRM's protocol (see the module doc).

    Args:
        name: ``'CMNIST'`` or ``'CMNIST-14'`` (14x14) or ``'CMNIST-28'``
            (28x28).
        root: cache folder.
        mirror: offline mirror folder.
        seed: seed of the shuffle, label noise and colours.
        train_envs: colour-flip probability of each training environment.
        test_env: colour-flip probability of the ``'reversed'`` test split.
        resolution: ``14`` or ``28``; must agree with ``name`` when the name
            states one.
        val_ratio: share of each training environment used for validation.
    """
    spec = dataset_spec(name, load_colored_mnist,
                        'Colored MNIST variant')
    if resolution is None:
        resolution = _RESOLUTIONS[name]
    if resolution not in (14, 28):
        raise ValueError(f'resolution must be 14 or 28, got {resolution}')
    if name != 'CMNIST' and resolution != _RESOLUTIONS[name]:
        raise ValueError(f"'{name}' is {_RESOLUTIONS[name]}x"
                         f"{_RESOLUTIONS[name]}, but resolution={resolution}")

    start = time.perf_counter()
    images, digits, source = load_mnist_train(root, mirror)
    if resolution == 14:
        images = images[:, ::2, ::2]  # IRM's 2x subsampling
    train, val, tests = colored_mnist_splits(
        images, digits, seed, tuple(train_envs), test_env, val_ratio)

    info = {
        'protocol': (f'IRM Colored MNIST: images [:{NUM_TRAIN_POOL}] shuffled '
                     f'into training environments (colour flip '
                     f'{list(train_envs)}), {val_ratio:g} of each held out '
                     f'for validation; test on images [{NUM_TRAIN_POOL}:] '
                     f'with colour flip {test_env} (reversed) and gray'),
        'resolution': f'{resolution}x{resolution}',
        'label_noise': LABEL_NOISE,
        'env_sizes': {
            f'train_env{i}(p={p})': int((train.env == i).sum())
            for i, p in enumerate(train_envs)
        },
        'color_label_agreement': {
            'train': _agreement(train), 'val': _agreement(val),
            **{k: _agreement(v) for k, v in tests.items()},
        },
        'source': source,
        'build_seconds': round(time.perf_counter() - start, 2),
    }
    return DatasetSplits(name=name, train=train, val=val, test=tests,
                         num_features=2 * resolution * resolution,
                         num_classes=2, metric=spec.metric, task=spec.task,
                         info=info)


for _name in _RESOLUTIONS:
    DATASETS.register(DatasetSpec(_name, load_colored_mnist,
                                  metric='accuracy', task='image'))
