"""Mirror errors, interrupted processing and the ``prepare`` command, through
the real loaders."""
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_hma.data import (ChecksumError, MissingDataError, find_mirror,
                          load_dataset)
from pyg_hma.data import mnist
from pyg_hma.data.__main__ import main
from pyg_hma.data.cache import recipe_dir

ROOT = Path(__file__).resolve().parents[1]  # the checkout

needs_mirror = pytest.mark.skipif(find_mirror() is None,
                                  reason='no offline data mirror')

IMAGES = 'mnist/train-images.idx3-ubyte.gz'
LABELS = 'mnist/train-labels.idx1-ubyte.gz'


def make_mirror(folder: Path, files: dict, sums: dict) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / 'SHA256SUMS').write_text(
        ''.join(f'{digest}  ./{rel}\n' for rel, digest in sums.items()))
    return folder


def test_checksum_mismatch_names_the_file(tmp_path):
    data = b'not really MNIST'
    good = hashlib.sha256(data).hexdigest()
    wrong = hashlib.sha256(b'something else').hexdigest()
    mirror = make_mirror(tmp_path / 'mirror', {IMAGES: data, LABELS: data},
                         {IMAGES: good, LABELS: wrong})
    with pytest.raises(ChecksumError) as err:
        load_dataset('CMNIST', root=tmp_path / 'cache', mirror=mirror)
    msg = str(err.value)
    assert str(mirror / LABELS) in msg and wrong in msg and good in msg
    assert not recipe_dir(tmp_path / 'cache', 'MNIST', mnist.RECIPE).exists()


def test_missing_file_names_the_file_and_the_place(tmp_path):
    data = b'x'
    mirror = make_mirror(tmp_path / 'mirror', {IMAGES: data},
                         {IMAGES: hashlib.sha256(data).hexdigest()})
    with pytest.raises(MissingDataError) as err:
        load_dataset('CMNIST', root=tmp_path / 'cache', mirror=mirror)
    assert LABELS in str(err.value) and str(mirror / LABELS) in str(err.value)


def test_a_mirror_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(MissingDataError, match='does not exist'):
        load_dataset('PROTEINS', root=tmp_path, mirror=tmp_path / 'nowhere')


@needs_mirror
def test_interrupted_mnist_cache_is_not_left_behind(tmp_path, monkeypatch):
    root = tmp_path / 'cache'
    real_save = torch.save

    def interrupted(obj, path, *args, **kwargs):
        Path(path).write_bytes(b'half a file')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist.load_mnist_train(root)
    assert list((root / 'processed').iterdir()) == []

    monkeypatch.setattr(torch, 'save', real_save)
    images, digits, source = mnist.load_mnist_train(root)
    assert images.shape == (60000, 28, 28) and digits.shape == (60000, )
    assert sorted(p.name for p in (root / 'processed').iterdir()) == [
        f'MNIST-{mnist.RECIPE}']


def _independent_size_shift(zip_path: Path, name: str):
    """The size-shift rule applied straight to the raw TU files."""
    with zipfile.ZipFile(zip_path) as zf:
        def read(kind):
            member = next(m for m in zf.namelist()
                          if m.endswith(f'{name}_{kind}.txt'))
            return np.loadtxt(io.BytesIO(zf.read(member)), dtype=np.int64)
        sizes = np.bincount(read('graph_indicator'))[1:]
        labels = read('graph_labels')
    p50, p90 = np.percentile(sizes, 50), np.percentile(sizes, 90)
    pool = int((sizes <= p50).sum())
    test = sizes >= p90
    _, test_labels = np.unique(labels, return_inverse=True)
    return {
        'splits': {'train': pool - int(0.1 * pool), 'val': int(0.1 * pool),
                   'test': int(test.sum())},
        'thresholds': {'p50': p50, 'p90': p90},
        'test_class_counts': np.bincount(test_labels[test]).tolist(),
        'num_graphs': len(sizes),
    }


@needs_mirror
def test_prepare_reports_the_documented_proteins_sizes(tmp_path, capsys):
    assert main(['prepare', '--dataset', 'PROTEINS', '--root',
                 str(tmp_path), '--json']) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = _independent_size_shift(find_mirror() / 'tu' / 'PROTEINS.zip',
                                       'PROTEINS')
    assert report['splits'] == expected['splits']
    assert report['num_graphs'] == expected['num_graphs']
    assert report['node_thresholds'] == pytest.approx(expected['thresholds'])
    assert report['splits_detail']['test']['class_counts'] == expected[
        'test_class_counts']
    assert report['num_features'] == 3 and report['metric'] == 'mcc'

    # docs/datasets.md states the same sizes.
    docs = (ROOT / 'docs' / 'datasets.md').read_text()
    row = next(line for line in docs.splitlines()
               if line.startswith('| PROTEINS |'))
    sizes = report['splits']
    assert f"{sizes['train']} / {sizes['val']} / {sizes['test']}" in row
    assert f"| {report['num_graphs']} |" in row
