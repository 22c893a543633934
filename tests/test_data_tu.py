"""TU size-shift and in-distribution splits, features and caching.

Most tests run on small hand-made TU zips in a temporary mirror, so they
need neither the real mirror nor the network.
"""
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.datasets import TUDataset

from pyg_hma.data import ChecksumError, MissingDataError, load_dataset
from pyg_hma.data import tu
from pyg_hma.data.tu import degree_features, random_split, size_shift_split
from torch_geometric.data import Data


# ---------------------------------------------------------------------------
# Hand-made TU zips
# ---------------------------------------------------------------------------

def write_tu_zip(path: Path, name: str, sizes, labels, node_labels=True,
                 node_attributes=False):
    """A TU zip of path graphs with ``sizes[i]`` nodes and graph label
    ``labels[i]``, nested in ``NAME//`` like some official zips."""
    edges, indicator, node_label, node_attr = [], [], [], []
    offset = 0
    for g, n in enumerate(sizes):
        for v in range(n):
            indicator.append(g + 1)
            node_label.append(v % 3)
            node_attr.append(0.5 * v)
            if v + 1 < n:  # TU files list both directions, 1-based
                edges += [(offset + v + 1, offset + v + 2),
                          (offset + v + 2, offset + v + 1)]
        offset += n
    files = {
        'A': '\n'.join(f'{a}, {b}' for a, b in edges),
        'graph_indicator': '\n'.join(map(str, indicator)),
        'graph_labels': '\n'.join(map(str, labels)),
    }
    if node_labels:
        files['node_labels'] = '\n'.join(map(str, node_label))
    if node_attributes:
        files['node_attributes'] = '\n'.join(map(str, node_attr))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, 'w') as zf:
        for key, text in files.items():
            zf.writestr(f'{name}//{name}_{key}.txt', text + '\n')
        zf.writestr(f'{name}//README.txt', 'hand-made\n')


def write_sums(mirror: Path, override=None):
    lines = []
    for file in sorted(mirror.rglob('*.zip')):
        rel = file.relative_to(mirror).as_posix()
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        lines.append(f'{(override or {}).get(rel, digest)}  ./{rel}')
    (mirror / 'SHA256SUMS').write_text('\n'.join(lines) + '\n')


SIZES = list(range(2, 22))  # 20 path graphs of 2..21 nodes
LABELS = [1 + (i % 2) for i in range(20)]  # TU style 1/2 labels


@pytest.fixture
def mirror(tmp_path):
    m = tmp_path / 'mirror'
    write_tu_zip(m / 'tu' / 'PROTEINS.zip', 'PROTEINS', SIZES, LABELS,
                 node_attributes=True)
    write_tu_zip(m / 'tu' / 'IMDB-BINARY.zip', 'IMDB-BINARY', SIZES, LABELS,
                 node_labels=False)
    write_sums(m)
    return m


# ---------------------------------------------------------------------------
# Split rules
# ---------------------------------------------------------------------------

def test_size_shift_ties_at_threshold_go_to_the_pool():
    # Sorted counts 1 2 3 3 3 3 4 5 9 9: the median is 3 and p90 is 9.
    counts = [3, 9, 1, 3, 4, 3, 9, 2, 5, 3]
    split = size_shift_split(counts, seed=0, val_ratio=0.)
    assert sorted(split.train.tolist()) == [0, 2, 3, 5, 7, 9]  # all four 3s
    assert split.test.tolist() == [1, 6]
    assert split.thresholds == {'p50': 3.0, 'p90': 9.0}


def test_size_shift_interpolated_threshold():
    # Counts 1..10: p50 = 5.5 and p90 = 9.1 (linear interpolation), so the
    # 9-node graph is neither in the pool nor in the test split.
    counts = list(range(1, 11))
    split = size_shift_split(counts, seed=0, val_ratio=0.)
    assert split.train.tolist() == [0, 1, 2, 3, 4]
    assert split.test.tolist() == [9]
    assert split.thresholds['p90'] == pytest.approx(9.1)


def test_size_shift_splits_are_disjoint_and_seeded():
    counts = np.random.default_rng(1).integers(5, 200, size=500)
    a = size_shift_split(counts, seed=0)
    b = size_shift_split(counts, seed=0)
    c = size_shift_split(counts, seed=1)
    pool = np.concatenate([a.train, a.val])
    assert len(set(pool.tolist())) == len(pool)
    assert not set(pool.tolist()) & set(a.test.tolist())
    assert counts[a.train].max() < counts[a.test].min()
    assert len(a.val) == int(0.1 * len(pool))
    for key in ('train', 'val', 'test'):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    # Another seed draws another validation set from the same pool; the
    # test split does not depend on the seed.
    assert not np.array_equal(a.val, c.val)
    assert sorted(np.concatenate([c.train, c.val]).tolist()) == sorted(
        pool.tolist())
    assert np.array_equal(a.test, c.test)


def test_size_shift_rejects_concentrated_counts():
    with pytest.raises(ValueError, match='overlap'):
        size_shift_split([7] * 10)


@pytest.mark.parametrize('n,sizes', [(1000, (700, 100, 200)),
                                     (1500, (1050, 150, 300)),
                                     (1113, (779, 111, 223))])
def test_random_split_sizes(n, sizes):
    # 0.7 + 0.1 is 0.7999... in floating point: no graph may be lost.
    split = random_split(n, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == sizes
    everything = np.concatenate([split.train, split.val, split.test])
    assert sorted(everything.tolist()) == list(range(n))


def test_random_split_seeds():
    a, b, c = (random_split(100, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.test, b.test)
    assert not np.array_equal(a.test, c.test)


# ---------------------------------------------------------------------------
# Degree features
# ---------------------------------------------------------------------------

def _path(n):
    src = torch.arange(n - 1)
    ei = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
    return Data(edge_index=ei, num_nodes=n)


def _star(n):
    leaves = torch.arange(1, n)
    hub = torch.zeros(n - 1, dtype=torch.long)
    ei = torch.stack([torch.cat([hub, leaves]), torch.cat([leaves, hub])])
    return Data(edge_index=ei, num_nodes=n)


def test_degree_features_one_hot():
    graphs = [_path(3), _star(5), Data(edge_index=torch.empty(2, 0,
                                       dtype=torch.long), num_nodes=2)]
    xs, desc = degree_features(graphs)
    assert [x.shape for x in xs] == [(3, 5), (5, 5), (2, 5)]  # max degree 4
    assert xs[0].argmax(1).tolist() == [1, 2, 1]
    assert xs[1].argmax(1).tolist() == [4, 1, 1, 1, 1]
    assert xs[2].argmax(1).tolist() == [0, 0]  # isolated nodes count
    assert 'one-hot' in desc


def test_degree_features_standardized_above_threshold():
    graphs = [_path(3), _star(5)]
    xs, desc = degree_features(graphs, onehot_max_degree=4)  # max degree 4
    flat = torch.cat(xs).view(-1)
    degs = torch.tensor([1., 2., 1., 4., 1., 1., 1., 1.])
    assert torch.allclose(flat, (degs - degs.mean()) / degs.std())
    assert 'standardized' in desc


# ---------------------------------------------------------------------------
# Loaders on hand-made zips
# ---------------------------------------------------------------------------

def test_size_shift_loader(mirror, tmp_path):
    splits = load_dataset('PROTEINS', root=tmp_path / 'cache', mirror=mirror)
    # p50 = 11.5 and p90 = 19.1 of 2..21 nodes.
    assert sorted(g.num_nodes for g in splits.test) == [20, 21]
    pool = sorted(g.num_nodes for g in list(splits.train) + list(splits.val))
    assert pool == list(range(2, 12))
    assert len(splits.val) == 1
    # Node labels 0..2 one-hot; the node attribute is dropped.
    assert splits.num_features == 3
    for g in splits.train:
        assert torch.equal(g.x.sum(1), torch.ones(g.num_nodes))
        assert g.x.argmax(1).tolist() == [v % 3 for v in range(g.num_nodes)]
        # TU labels 1/2 become 0/1; a graph of n nodes had label 1 + n % 2.
        assert int(g.y) == g.num_nodes % 2
    assert splits.num_classes == 2 and splits.metric == 'mcc'
    assert str(mirror / 'tu' / 'PROTEINS.zip') in splits.info['source']


def test_in_distribution_loader_uses_degree_features(mirror, tmp_path):
    splits = load_dataset('IMDB-BINARY', root=tmp_path / 'cache',
                          mirror=mirror)
    assert splits.sizes() == {'train': 14, 'val': 2, 'test': 4}
    assert splits.metric == 'accuracy'
    assert splits.num_features == 3  # path graphs: degrees 0..2
    for g in splits.test:
        ends = [0, g.num_nodes - 1]
        assert g.x.argmax(1)[ends].tolist() == [1, 1]
    seen = sorted(g.num_nodes for key in ('train', 'val', 'test')
                  for g in getattr(splits, key))
    assert seen == SIZES


def test_id_name_keeps_node_labels(mirror, tmp_path):
    splits = load_dataset('PROTEINS-ID', root=tmp_path / 'cache',
                          mirror=mirror, seed=3)
    assert splits.num_features == 3 and 'node labels' in splits.info[
        'features']
    assert splits.sizes() == {'train': 14, 'val': 2, 'test': 4}


def test_second_load_uses_the_cache(mirror, tmp_path, monkeypatch):
    root = tmp_path / 'cache'
    first = load_dataset('PROTEINS', root=root, mirror=mirror)

    def fail(*args, **kwargs):
        raise AssertionError('reprocessed although the cache is complete')

    monkeypatch.setattr(tu, '_process', fail)
    monkeypatch.setattr(tu, '_tu_dataset', fail)
    again = load_dataset('PROTEINS', root=root, mirror=mirror)
    assert [g.num_nodes for g in again.train] == [
        g.num_nodes for g in first.train]


def test_interrupted_processing_leaves_no_cache(mirror, tmp_path,
                                                monkeypatch):
    root = tmp_path / 'cache'

    # Interrupted while writing the raw files ...
    real_extract = tu._extract_tu_zip

    def interrupted(zip_path, raw_dir, name):
        real_extract(zip_path, raw_dir, name)
        raise KeyboardInterrupt

    monkeypatch.setattr(tu, '_extract_tu_zip', interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_dataset('PROTEINS', root=root, mirror=mirror)
    assert list((root / 'tu').iterdir()) == []
    monkeypatch.undo()

    # ... and halfway through writing the processed cache.
    def half_written(folder, *args):
        folder.mkdir()
        (folder / 'data.pt').write_bytes(b'partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(tu, 'save_graphs', half_written)
    with pytest.raises(KeyboardInterrupt):
        load_dataset('PROTEINS', root=root, mirror=mirror)
    assert list((root / 'processed').iterdir()) == []
    monkeypatch.undo()

    splits = load_dataset('PROTEINS', root=root, mirror=mirror)
    assert len(splits.test) == 2


def test_checksum_mismatch_names_the_file(mirror, tmp_path):
    write_sums(mirror, override={'tu/PROTEINS.zip': '0' * 64})
    with pytest.raises(ChecksumError, match='PROTEINS.zip'):
        load_dataset('PROTEINS', root=tmp_path / 'cache', mirror=mirror)


def test_missing_file_names_the_file_and_the_download(mirror, tmp_path):
    with pytest.raises(MissingDataError) as err:
        load_dataset('REDDIT-MULTI-5K', root=tmp_path / 'cache',
                     mirror=mirror)
    msg = str(err.value)
    assert 'tu/REDDIT-MULTI-5K.zip' in msg
    assert f'{TUDataset.url}/REDDIT-MULTI-5K.zip' in msg
    assert not (tmp_path / 'cache' / 'tu' / 'REDDIT-MULTI-5K').exists()


def test_without_mirror_uses_the_tudataset_download(tmp_path, monkeypatch):
    source = tmp_path / 'server' / 'NCI1.zip'
    write_tu_zip(source, 'NCI1', SIZES, LABELS)
    calls = []

    def fake_download(self):  # what PyG's download leaves behind
        calls.append(self.name)
        tu._extract_tu_zip(source, Path(self.raw_dir), self.name)

    monkeypatch.setattr(tu, 'find_mirror', lambda mirror=None: None)
    monkeypatch.setattr(TUDataset, 'download', fake_download)
    splits = load_dataset('NCI1', root=tmp_path / 'cache')
    assert calls == ['NCI1']
    assert splits.info['source'] == f'download: {TUDataset.url}/NCI1.zip'
    assert sorted(g.num_nodes for g in splits.test) == [20, 21]


def test_unknown_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match='size-shift'):
        tu.load_tu_size_shift('IMDB-BINARY', root=tmp_path)
    with pytest.raises(ValueError, match='in-distribution'):
        tu.load_tu_in_distribution('MUTAG', root=tmp_path)
