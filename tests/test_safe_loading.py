"""Loading never runs code: a malicious pickle planted in any file this
project reads back (run checkpoint, processed caches, exported splits, PyG's
side files, DIG's pickled features) is refused or replaced, never executed.

Every test plants a file whose unpickling would create a marker file, calls
the project's real loading code, and checks that the marker never appears.
"""
import gzip
import hashlib
import json
import os
import pickle
import random
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pyg_hma.data import DatasetSplits, load_dataset
from pyg_hma.data import mnist, text, tu
from pyg_hma.data.cache import recipe_dir
from pyg_hma.files import UnreadableFileError, torch_load
from pyg_hma.data.exported import exported_file, load_exported
from pyg_hma.models import build_model
from pyg_hma.train import TrainConfig, fit
from pyg_hma.train import engine

from test_data_tu import LABELS, SIZES, write_sums, write_tu_zip


class Payload:
    """Unpickling this creates ``marker``: with ``Path.touch`` (a global that
    torch's safe loader refuses with a hint to allow-list it, on which PyG's
    ``fs.torch_load`` retries with ``weights_only=False``) or through a
    shell (``os.system``)."""
    def __init__(self, marker: Path, via: str = 'touch'):
        self.marker, self.via = Path(marker), via

    def __reduce__(self):
        if self.via == 'system':
            return os.system, (f'touch {shlex.quote(str(self.marker))}', )
        return Path.touch, (self.marker, )


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'PWNED'
    yield path
    assert not path.exists(), 'a planted pickle was executed'


def plant(path: Path, marker: Path, wrap=lambda p: p, via='touch') -> Path:
    """Writes a ``torch.save`` file whose unpickling creates ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(Payload(marker, via)), path)
    return path


@pytest.mark.parametrize('via', ['touch', 'system'])
def test_the_payload_runs_when_unpickled_unsafely(tmp_path, via):
    # The control: the planted files below are really malicious.
    marker = tmp_path / 'control'
    file = plant(tmp_path / 'evil.pt', marker, via=via)
    torch.load(file, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize('via', ['touch', 'system'])
def test_torch_load_refuses_pickled_objects(tmp_path, marker, via):
    file = plant(tmp_path / 'evil.pt', marker, wrap=lambda p: {'x': [p]},
                 via=via)
    with pytest.raises(UnreadableFileError, match='nothing in it was run'):
        torch_load(file)


# --------------------------------------------------------------------------
# Run checkpoint
# --------------------------------------------------------------------------
def toy_splits(n=32):
    gen = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(n, 1, 2, 2, generator=gen),
                       torch.randint(0, 2, (n, ), generator=gen))
    return DatasetSplits(name='toy', train=ds, val=ds, test=ds,
                         num_features=4, num_classes=2, metric='accuracy',
                         task='image')


def toy_model():
    return build_model('mlp', 'erm', num_classes=2, input_shape=(1, 2, 2),
                       backbone_kwargs=dict(hidden_channels=8))


def test_rng_state_round_trips_through_a_safe_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1), np.random.normal()  # cached Gaussians in the state

    def draws():
        return (random.random(), random.gauss(0, 1),
                np.random.rand(3).tolist(), np.random.normal(),
                torch.rand(2).tolist())

    torch.save(engine._rng_state(), tmp_path / 'rng.pt')
    expected = draws()
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    engine._set_rng_state(torch.load(tmp_path / 'rng.pt', weights_only=True))
    assert draws() == expected


@pytest.mark.parametrize('where', ['top', 'model'])
def test_resume_refuses_a_planted_checkpoint(tmp_path, marker, where,
                                             one_thread):
    ckpt = tmp_path / 'run.ckpt'
    cfg = TrainConfig(epochs=2, batch_size=8)
    if where == 'top':
        plant(ckpt, marker)
    else:  # a checkpoint that looks right, with a payload deep inside
        fit(toy_model, toy_splits(), 'erm', cfg, seed=0, checkpoint=ckpt)
        plant(ckpt, marker, via='system', wrap=lambda p: {
            'version': engine.CHECKPOINT_VERSION, 'epoch': 1,
            'model': {'backbone.weight': p}})
    with pytest.raises(ValueError, match='Cannot resume from checkpoint'):
        fit(toy_model, toy_splits(), 'erm', cfg, seed=0, checkpoint=ckpt,
            resume=True)


# --------------------------------------------------------------------------
# Processed caches
# --------------------------------------------------------------------------
@pytest.fixture
def tu_mirror(tmp_path):
    m = tmp_path / 'mirror'
    write_tu_zip(m / 'tu' / 'PROTEINS.zip', 'PROTEINS', SIZES, LABELS)
    write_sums(m)
    return m


def test_tu_cache_with_a_payload_is_rebuilt_not_run(tmp_path, marker,
                                                    tu_mirror):
    root = tmp_path / 'cache'
    cache = recipe_dir(root, 'PROTEINS', tu.RECIPE)
    plant(cache / 'data.pt', marker, wrap=lambda p: ({'x': p}, {}, {}))
    (cache / 'DONE').write_text(tu.RECIPE + '\n')
    with pytest.warns(UserWarning, match='Rebuilding the cache'):
        splits = load_dataset('PROTEINS', root=root, mirror=tu_mirror)
    assert sorted(g.num_nodes for g in splits.test) == [20, 21]
    # The rebuilt cache is a plain-tensor file.
    torch.load(cache / 'data.pt', weights_only=True)


def test_pyg_side_files_of_tu_are_never_loaded(tmp_path, marker, tu_mirror):
    root = tmp_path / 'cache'
    load_dataset('PROTEINS', root=root, mirror=tu_mirror)
    # PyG loads processed/pre_transform.pt and pre_filter.pt with
    # weights_only=False, and falls back to weights_only=False for a
    # processed data.pt that names a class it does not know.
    processed = root / 'tu' / 'PROTEINS' / 'processed'
    for name in ('pre_transform.pt', 'pre_filter.pt', 'data.pt'):
        plant(processed / name, marker)
    # The raw folder is reused; only the recipe cache is gone.
    cache = recipe_dir(root, 'PROTEINS', tu.RECIPE)
    for file in cache.iterdir():
        file.unlink()
    cache.rmdir()
    splits = load_dataset('PROTEINS', root=root, mirror=tu_mirror)
    assert sorted(g.num_nodes for g in splits.test) == [20, 21]
    assert not processed.exists()


def write_idx_gz(path: Path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
        int(n).to_bytes(4, 'big') for n in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, 'wb', compresslevel=1) as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_mirror(tmp_path):
    """A mirror with MNIST-shaped (60000 x 28 x 28) synthetic files."""
    m = tmp_path / 'mirror'
    images = np.zeros((60000, 28, 28), dtype=np.uint8)
    images[:, 3, 5] = np.arange(60000) % 251
    write_idx_gz(m / mnist._FILES['images'][0], images)
    write_idx_gz(m / mnist._FILES['labels'][0], np.arange(60000) % 10)
    lines = [f"{hashlib.sha256((m / rel).read_bytes()).hexdigest()}  ./{rel}"
             for rel, _ in mnist._FILES.values()]
    (m / 'SHA256SUMS').write_text('\n'.join(lines) + '\n')
    return m


def test_mnist_cache_with_a_payload_is_rebuilt_not_run(tmp_path, marker,
                                                      mnist_mirror):
    root = tmp_path / 'cache'
    cache = recipe_dir(root, 'MNIST', mnist.RECIPE)
    plant(cache / 'train.pt', marker,
          wrap=lambda p: {'images': p, 'digits': p, 'source': 'x'})
    (cache / 'DONE').write_text(mnist.RECIPE + '\n')
    with pytest.warns(UserWarning, match='Rebuilding the cache'):
        images, digits, source = mnist.load_mnist_train(root, mnist_mirror)
    assert images.shape == (60000, 28, 28) and int(images[7, 3, 5]) == 7
    assert digits[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert source.startswith('mirror')


# --------------------------------------------------------------------------
# Exported splits
# --------------------------------------------------------------------------
def test_exported_splits_with_a_payload_are_refused(tmp_path, marker):
    folder = tmp_path / 'exported'
    plant(exported_file(folder, 'PROTEINS', 0), marker,
          wrap=lambda p: {'format': 1, 'splits': p})
    with pytest.raises(ValueError, match='not a readable pyg_hma export'):
        load_dataset('PROTEINS', seed=0, exported=folder)
    with pytest.raises(ValueError, match='not a readable pyg_hma export'):
        load_exported(exported_file(folder, 'PROTEINS', 0))


# --------------------------------------------------------------------------
# Text graphs: DIG's pickled features and the processed cache
# --------------------------------------------------------------------------
def _fake_dig(folder: Path, name: str, features) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f'{name}_node_features.pkl', 'wb') as f:
        pickle.dump(features, f)
    (folder / f'{name}_edge_index.txt').write_text('1 0\n1 2\n4 3\n4 5\n')
    (folder / f'{name}_node_indicator.txt').write_text(
        '1\n1\n1\n2\n2\n2\n')
    (folder / f'{name}_graph_labels.txt').write_text('2\n0\n')


def test_dig_features_with_a_payload_are_refused(tmp_path, marker):
    name = 'Graph-Twitter'
    _fake_dig(tmp_path / name / 'raw', name, Payload(marker))
    with pytest.raises(ValueError, match='not a pickled NumPy array'):
        text.load_text_graphs(name, root=tmp_path, source='dig')
    # A genuine array pickle still loads.
    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    _fake_dig(tmp_path / name / 'raw', name, x)
    splits = text.load_text_graphs(name, root=tmp_path, source='dig')
    assert splits.info['graphs'] == 2 and splits.num_features == 4


def test_text_cache_with_a_payload_is_rebuilt_not_run(tmp_path, marker):
    name = 'Graph-Twitter'
    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    _fake_dig(tmp_path / name / 'raw', name, x)
    first = text.load_text_graphs(name, root=tmp_path, source='dig')
    cache = Path(first.info['cache'])
    # PyG's InMemoryDataset.load would retry this file with
    # weights_only=False (it names a global torch does not allow).
    plant(cache / 'data.pt', marker, wrap=lambda p: (p, {}, None))
    with pytest.warns(UserWarning, match='Rebuilding the cache'):
        again = text.load_text_graphs(name, root=tmp_path, source='dig')
    assert again.info['graphs'] == 2
    assert json.loads((cache / 'meta.json').read_text())['fingerprint']


# --------------------------------------------------------------------------
# OGB: PyG's side files in ogb's processed folder
# --------------------------------------------------------------------------
def _tiny_ogb_folder(folder: Path) -> None:
    """Three two-atom molecules in the layout of OGB's dataset folder."""
    from pyg_hma.data.ogb_mol import RELEASE_FILE, _to_csv_gz

    for sub in ('raw', 'split/scaffold', 'processed'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    n = 3
    _to_csv_gz(np.array([[0, 1]] * n), folder / 'raw' / 'edge.csv.gz')
    _to_csv_gz(np.ones((2 * n, 9), dtype=np.int64),
               folder / 'raw' / 'node-feat.csv.gz')
    _to_csv_gz(np.ones((n, 3), dtype=np.int64),
               folder / 'raw' / 'edge-feat.csv.gz')
    _to_csv_gz(np.full(n, 2), folder / 'raw' / 'num-node-list.csv.gz')
    _to_csv_gz(np.ones(n, dtype=np.int64),
               folder / 'raw' / 'num-edge-list.csv.gz')
    _to_csv_gz(np.array([0, 1, 0]), folder / 'raw' / 'graph-label.csv.gz')
    for split, idx in (('train', [0]), ('valid', [1]), ('test', [2])):
        _to_csv_gz(np.array(idx), folder / 'split' / 'scaffold' /
                   f'{split}.csv.gz')
    (folder / RELEASE_FILE).write_text('tiny\n')


def test_pyg_side_files_of_ogb_are_never_loaded(tmp_path, marker):
    pytest.importorskip('ogb')
    from pyg_hma.data.ogb_mol import load_ogb_mol

    folder = tmp_path / 'ogbg_molbace'
    _tiny_ogb_folder(folder)
    for name in ('pre_transform.pt', 'pre_filter.pt'):
        plant(folder / 'processed' / name, marker)
    with pytest.warns(UserWarning, match='OGB has 1513'):
        splits = load_ogb_mol('ogbg-molbace', root=tmp_path)
    assert len(splits.train) == len(splits.val) == len(splits.test) == 1
    assert not (folder / 'processed' / 'pre_transform.pt').exists()
    assert not (folder / 'processed' / 'pre_filter.pt').exists()
    # A second load (processed data present) is just as safe.
    for name in ('pre_transform.pt', 'pre_filter.pt'):
        plant(folder / 'processed' / name, marker)
    with pytest.warns(UserWarning, match='OGB has 1513'):
        load_ogb_mol('ogbg-molbace', root=tmp_path)
