"""Exported splits load without the dataset's loader and equal the
processed splits graph for graph."""
import json
import subprocess
import sys

import pytest
import torch

from pyg_hma.data import MissingDataError, find_mirror, load_dataset
from pyg_hma.data.__main__ import main as data_cli
from pyg_hma.data.exported import compact_int, exported_file

pytestmark = pytest.mark.skipif(find_mirror() is None,
                                reason='needs the offline data mirror')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    # Shared with test_engine.py / test_runners.py: processed once.
    return tmp_path_factory.getbasetemp() / 'pyg_hma_data'


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp('exported')
    assert data_cli(['export', '--dataset', 'PROTEINS', '--seeds', '2',
                     '--root', str(data_root), '--out', str(out)]) == 0
    return out


def test_exported_splits_equal_processed_ones(export_dir, data_root):
    for seed in (0, 1):
        ref = load_dataset('PROTEINS', root=data_root, seed=seed)
        got = load_dataset('PROTEINS', seed=seed, exported=export_dir)
        assert got.sizes() == ref.sizes()
        assert (got.num_features, got.num_classes, got.metric) == \
            (ref.num_features, ref.num_classes, ref.metric)
        for split in ('train', 'val', 'test'):
            a, b = getattr(ref, split), getattr(got, split)
            for i in range(len(a)):
                # A stored node count equal to x's rows is not exported.
                assert b[i].num_nodes == a[i].num_nodes
                for key in set(a[i].keys()) - {'num_nodes'}:
                    va, vb = a[i][key], b[i][key]
                    assert vb.dtype == va.dtype and torch.equal(va, vb), \
                        (seed, split, i, key)
    # The two seeds' size-shift splits differ, and so do their files.
    s0 = load_dataset('PROTEINS', seed=0, exported=export_dir)
    s1 = load_dataset('PROTEINS', seed=1, exported=export_dir)
    assert not all(torch.equal(s0.train[i].x, s1.train[i].x)
                   for i in range(20))


def test_exported_load_needs_only_torch_and_pyg(export_dir):
    # A fresh interpreter that cannot import ogb or rdkit (as on the GPU
    # image) still loads the export, and never runs the TU loader (its
    # module is imported, to register the names, but processes nothing).
    code = f"""
import sys
sys.modules['ogb'] = None; sys.modules['rdkit'] = None
from pyg_hma.data import load_dataset, tu
def never(*args, **kwargs):
    raise AssertionError('the TU loader ran')
tu.load_tu_graphs = never
s = load_dataset('PROTEINS', seed=0, exported={str(export_dir)!r})
print(len(s.train))
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True)
    assert int(out.stdout) > 0


def test_exported_errors_are_clear(export_dir, tmp_path, monkeypatch):
    with pytest.raises(MissingDataError, match='python -m pyg_hma.data '
                       'export'):
        load_dataset('PROTEINS', seed=7, exported=export_dir)
    with pytest.raises(LookupError, match='Unknown dataset'):
        load_dataset('proteins', exported=export_dir)
    bad = exported_file(tmp_path, 'PROTEINS', 0)
    bad.write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='not a readable pyg_hma export'):
        load_dataset('PROTEINS', exported=tmp_path)
    # The environment variable works like the argument.
    monkeypatch.setenv('PYG_HMA_EXPORTED', str(export_dir))
    assert len(load_dataset('PROTEINS', seed=1).train) > 0


def test_compact_int_is_lossless():
    for t in (torch.tensor([0, 255]), torch.tensor([-1, 300]),
              torch.tensor([70000, 0]), torch.tensor([2**40])):
        small = compact_int(t)
        assert torch.equal(small.long(), t)
        assert small.element_size() <= t.element_size()
    assert compact_int(torch.tensor([0, 255])).dtype == torch.uint8
    assert compact_int(torch.tensor([-1, 300])).dtype == torch.int16
