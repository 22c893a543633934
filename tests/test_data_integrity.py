"""Data integrity: a mirror file is read only when SHA256SUMS vouches for it,
and a processed cache that cannot be read is rebuilt once, then reported."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_hma.data import ChecksumError, find_mirror, load_dataset, mirror_file
from pyg_hma.data import mnist, ogb_mol, text, text_raw, tu
from pyg_hma.data.cache import load_cache, read_cache_file, recipe_dir
from pyg_hma.files import UnreadableFileError

from test_data_tu import LABELS, SIZES, write_tu_zip

ZIP = 'tu/PROTEINS.zip'


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path):
    """A mirror holding a hand-made PROTEINS zip and nothing else."""
    m = tmp_path / 'mirror'
    write_tu_zip(m / ZIP, 'PROTEINS', SIZES, LABELS)
    return m


# --------------------------------------------------------------------------
# SHA256SUMS: missing, empty, malformed, or silent about the file
# --------------------------------------------------------------------------
def test_a_listed_file_loads(mirror, tmp_path):
    (mirror / 'SHA256SUMS').write_text(
        f'# checked by hand\n\n{digest(mirror / ZIP)} *./{ZIP}\n')
    splits = load_dataset('PROTEINS', root=tmp_path / 'cache', mirror=mirror)
    assert sorted(g.num_nodes for g in splits.test) == [20, 21]


def test_a_mirror_without_sha256sums_is_an_error(mirror, tmp_path):
    with pytest.raises(ChecksumError, match='has no SHA256SUMS') as err:
        load_dataset('PROTEINS', root=tmp_path / 'cache', mirror=mirror)
    assert str(mirror) in str(err.value) and 'sha256sum' in str(err.value)
    assert not recipe_dir(tmp_path / 'cache', 'PROTEINS', tu.RECIPE).exists()


@pytest.mark.parametrize('content', ['', '\n\n', '# nothing yet\n'])
def test_an_empty_sha256sums_is_an_error(mirror, tmp_path, content):
    (mirror / 'SHA256SUMS').write_text(content)
    with pytest.raises(ChecksumError, match='lists no checksums'):
        load_dataset('PROTEINS', root=tmp_path / 'cache', mirror=mirror)


@pytest.mark.parametrize('bad', [
    'deadbeef  ./tu/OTHER.zip',            # digest too short
    '{d}',                                 # no file name
    '{d}./tu/OTHER.zip',                   # no separator
    'SHA256 (tu/OTHER.zip) = {d}',         # BSD style
    '{z}  ./tu/OTHER.zip',                 # not hexadecimal
])
def test_a_malformed_sha256sums_line_is_an_error(mirror, tmp_path, bad):
    good = f'{digest(mirror / ZIP)}  ./{ZIP}'
    line = bad.format(d='a' * 64, z='z' * 64)
    (mirror / 'SHA256SUMS').write_text(f'{good}\n{line}\n')
    with pytest.raises(ChecksumError, match='line 2 is not') as err:
        load_dataset('PROTEINS', root=tmp_path / 'cache', mirror=mirror)
    assert str(mirror / 'SHA256SUMS') in str(err.value)


def test_a_file_without_a_checksum_line_is_an_error(mirror, tmp_path):
    (mirror / 'SHA256SUMS').write_text(f'{"a" * 64}  ./tu/NCI1.zip\n')
    with pytest.raises(ChecksumError, match='has no line in') as err:
        load_dataset('PROTEINS', root=tmp_path / 'cache', mirror=mirror)
    msg = str(err.value)
    assert ZIP in msg and f"sha256sum '{ZIP}' >> SHA256SUMS" in msg
    assert '\n' not in msg
    assert not (tmp_path / 'cache' / 'tu' / 'PROTEINS').exists()


def test_a_real_file_with_a_handwritten_sha256sums(tmp_path):
    real = find_mirror()
    if real is None or not (real / ZIP).is_file():
        pytest.skip('needs the offline data mirror')
    m = tmp_path / 'mirror'
    (m / 'tu').mkdir(parents=True)
    shutil.copy(real / ZIP, m / ZIP)
    (m / 'SHA256SUMS').write_text(f'{digest(m / ZIP)}  {ZIP}\n')
    assert mirror_file(ZIP, m) == m / ZIP
    (m / 'SHA256SUMS').write_text(f'{"0" * 64}  {ZIP}\n')
    with pytest.raises(ChecksumError, match='Checksum mismatch'):
        mirror_file(ZIP, m)


def _files_the_loaders_read():
    files = [f'tu/{name}.zip' for name in
             tu.SIZE_SHIFT_DATASETS + tu.IN_DISTRIBUTION_DATASETS]
    files += [rel for rel, _ in mnist._FILES.values()]
    files += [spec.csv for spec in ogb_mol._SPECS.values()]
    files += [rel for sources in text_raw.RAW_FILES.values()
              for rel, _, _ in sources]
    return files


def test_the_real_mirror_vouches_for_every_file_it_holds():
    real = find_mirror()
    if real is None:
        pytest.skip('needs the offline data mirror')
    present = [rel for rel in _files_the_loaders_read()
               if (real / rel).is_file()]
    assert len(present) >= 10
    for rel in present:  # raises ChecksumError for an unlisted file
        assert mirror_file(rel, real) == real / rel


# --------------------------------------------------------------------------
# Processed caches: rebuilt once when unreadable, then reported
# --------------------------------------------------------------------------
@pytest.fixture
def listed_mirror(mirror):
    (mirror / 'SHA256SUMS').write_text(f'{digest(mirror / ZIP)}  ./{ZIP}\n')
    return mirror


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'empty'])
def test_a_corrupt_tu_cache_is_rebuilt(listed_mirror, tmp_path, damage):
    root = tmp_path / 'cache'
    first = load_dataset('PROTEINS', root=root, mirror=listed_mirror)
    data = recipe_dir(root, 'PROTEINS', tu.RECIPE) / 'data.pt'
    blob = data.read_bytes()
    data.write_bytes({'truncate': blob[:len(blob) // 2],
                      'garbage': b'\x00not a torch file' * 10,
                      'empty': b''}[damage])
    with pytest.warns(UserWarning, match='Rebuilding the cache'):
        again = load_dataset('PROTEINS', root=root, mirror=listed_mirror)
    assert [g.num_nodes for g in again.train] == [
        g.num_nodes for g in first.train]
    data_dict, slices = torch.load(data, weights_only=True)
    meta = json.loads((data.parent / 'meta.json').read_text())
    assert meta['num_graphs'] == len(SIZES)


def test_missing_raw_files_come_from_the_mirror_again(listed_mirror,
                                                      tmp_path):
    root = tmp_path / 'cache'
    first = load_dataset('PROTEINS', root=root, mirror=listed_mirror)
    raw = root / 'tu' / 'PROTEINS' / 'raw' / 'PROTEINS_A.txt'
    assert raw.is_file()
    raw.unlink()  # behind the folder's completion marker
    for folder in (root / 'processed').iterdir():
        shutil.rmtree(folder)  # so the raw files are read again
    again = load_dataset('PROTEINS', root=root, mirror=listed_mirror)
    assert raw.is_file()
    assert [g.num_edges for g in again.train] == [
        g.num_edges for g in first.train]


def test_a_cache_that_stays_unreadable_is_reported(listed_mirror, tmp_path,
                                                   monkeypatch):
    root = tmp_path / 'cache'
    cache = recipe_dir(root, 'PROTEINS', tu.RECIPE)
    cache.mkdir(parents=True)
    (cache / 'data.pt').write_bytes(b'corrupt')
    (cache / 'meta.json').write_text('{}')
    (cache / 'DONE').write_text(tu.RECIPE + '\n')
    builds = []

    def broken_write(folder, *args):  # a disk that corrupts every write
        builds.append(folder)
        folder.mkdir()
        (folder / 'data.pt').write_bytes(b'corrupt again')
        (folder / 'meta.json').write_text('{}')
        (folder / 'DONE').write_text(tu.RECIPE + '\n')

    monkeypatch.setattr(tu, 'save_graphs', broken_write)
    with pytest.warns(UserWarning, match='Rebuilding'), \
            pytest.raises(UnreadableFileError,
                          match='rebuilt but still cannot be read'):
        load_dataset('PROTEINS', root=root, mirror=listed_mirror)
    assert len(builds) == 1  # rebuilt once, not in a loop
    # A cache that cannot be read right after its first build is reported
    # at once, without a second build.
    shutil.rmtree(cache)
    builds.clear()
    with pytest.raises(UnreadableFileError, match='just built'):
        load_dataset('PROTEINS', root=root, mirror=listed_mirror)
    assert len(builds) == 1


def test_load_cache_builds_once_and_reads_back(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        folder.mkdir()
        torch.save({'x': torch.arange(3)}, folder / 'f.pt')
        (folder / 'DONE').touch()

    def read(folder):
        return read_cache_file(folder, 'f.pt')

    folder = tmp_path / 'c'
    assert load_cache(folder, build, read)['x'].tolist() == [0, 1, 2]
    assert load_cache(folder, build, read)['x'].tolist() == [0, 1, 2]
    assert len(calls) == 1
    (folder / 'f.pt').write_bytes(b'PK\x03\x04 truncated zip')
    with pytest.warns(UserWarning, match='Rebuilding'):
        assert load_cache(folder, build, read)['x'].tolist() == [0, 1, 2]
    assert len(calls) == 2


def test_a_corrupt_text_cache_is_rebuilt(tmp_path):
    from test_safe_loading import _fake_dig

    name = 'Graph-Twitter'
    _fake_dig(tmp_path / name / 'raw', name,
              np.arange(24, dtype=np.float32).reshape(6, 4))
    first = text.load_text_graphs(name, root=tmp_path, source='dig')
    cache = Path(first.info['cache'])
    blob = (cache / 'data.pt').read_bytes()
    (cache / 'data.pt').write_bytes(blob[:len(blob) // 3])
    with pytest.warns(UserWarning, match='Rebuilding the cache'):
        again = text.load_text_graphs(name, root=tmp_path, source='dig')
    assert again.info['graphs'] == 2 and again.sizes() == first.sizes()
    x = torch.cat([g.x for split in (again.train, again.val, again.test)
                   for g in split] or [torch.zeros(0, 4)])
    y = torch.cat([g.x for split in (first.train, first.val, first.test)
                   for g in split] or [torch.zeros(0, 4)])
    assert torch.equal(x, y)
    (cache / 'meta.json').write_text('{not json')
    with pytest.warns(UserWarning, match='meta.json cannot be read'):
        text.load_text_graphs(name, root=tmp_path, source='dig')
