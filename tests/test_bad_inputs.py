"""Bad input a new user types: each case is one line on stderr saying what
is wrong and how to fix it, exit status 2 for a usage error, before any data
is loaded where the input allows, and nothing left behind; a case that
used to pass silently now says what it did; the wait for a Ray cluster is
bounded; two processes preparing one dataset both succeed.

The command lines run in-process through their ``main(argv)`` (a fresh
``--root`` that must stay absent shows that no data was loaded), except
where separate processes are the point."""
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from conftest import runner_module
from pyg_hma import HMAReadout
from pyg_hma.data import find_mirror
from pyg_hma.data import __main__ as data_cli
from pyg_hma.data.cache import (DONE, check_digests, load_cache, read_graphs,
                                save_graphs)
from pyg_hma.runners import main as runner_main
from pyg_hma.runners import ray_backend
from pyg_hma.runners.cli import build_parser
from pyg_hma.runners.plan import Printer, plan
from pyg_hma.runners.spec import RunSpec, output_root

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = None

needs_mirror = pytest.mark.skipif(find_mirror() is None,
                                  reason='needs the offline data mirror')
needs_proc = pytest.mark.skipif(not Path('/proc/self').is_dir(),
                                reason='needs Linux /proc')


def ood_protocols():
    global PROTOCOLS
    if PROTOCOLS is None:
        PROTOCOLS = runner_module('ood').PROTOCOLS
    return PROTOCOLS


def call(main, argv, **kwargs):
    """(exit status, stdout, stderr) of ``main(argv)``, never raising
    SystemExit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv, **kwargs)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def ood(argv):
    return call(runner_main, argv, runner='ood', protocols=ood_protocols())


def error_line(err: str, prog: str, alone: bool = True) -> str:
    """The one error line of :obj:`err`; :obj:`alone`: the only line (no
    usage, no progress lines before it)."""
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1 and (prog is None or lines[0].startswith(
        f'{prog}: error: ')), err
    assert not alone or err.strip() == lines[0], err
    return lines[0]


def runner_argv(tmp_path, *extra):
    """A --quick NCI1 command line whose --out and --root do not exist
    yet: neither may exist after a refused invocation."""
    return ['--dataset', 'NCI1', '--quick', '--method', 'erm', 'hma',
            '--seeds', '0-0', '--out', str(tmp_path / 'out'), '--root',
            str(tmp_path / 'root'), *extra]


def nothing_written(tmp_path):
    return not (tmp_path / 'out').exists() and \
        not (tmp_path / 'root').exists()


# --------------------------------------------------------------------------
# The runners: --set values, folders, checkpoints, --compare-evals, Ray


@pytest.mark.parametrize('setting,says', [
    ('hma.memory_size=-5', 'at least 1'),
    ('hma.style=banana', 'must be one of'),
    ('backbone.dropout=2', 'in [0, 1)'),
    ('train.batch_size=1', 'at least 2'),
    ('hma.heads=7', 'divisible by heads=7'),
    ('hma.label_dim=0', 'at least 1'),
    ('train.lr_gamma=0', 'greater than 0'),
])
def test_set_values_are_checked_before_any_data(tmp_path, setting, says):
    code, _, err = ood(runner_argv(tmp_path, '--set', setting))
    line = error_line(err, 'ood.py')
    assert code == 2
    assert f'--set {setting.split("=")[0]}' in line and says in line, line
    assert 'training split is too small' not in line
    assert nothing_written(tmp_path)


@needs_proc
def test_out_that_root_cannot_write_either(tmp_path):
    # os.access says yes to root for /proc; a probe file says no.
    code, _, err = ood(runner_argv(tmp_path)[:-4] + [
        '--out', '/proc/pyg_hma_nope', '--root', str(tmp_path / 'root')])
    line = error_line(err, 'ood.py')
    assert code == 2 and '--out /proc/pyg_hma_nope cannot be used' in line
    assert not (tmp_path / 'root').exists()


@needs_proc
def test_tensorboard_under_a_folder_that_cannot_be_written(tmp_path):
    pytest.importorskip('tensorboard')
    code, _, err = ood(runner_argv(tmp_path, '--tensorboard',
                                   '/proc/pyg_hma_nope/tb'))
    line = error_line(err, 'ood.py')
    assert code == 2 and '--tensorboard /proc/pyg_hma_nope/tb' in line
    assert 'cannot be used' in line
    assert nothing_written(tmp_path)


def planned(argv):
    """The cells :func:`plan` makes of a runner command line (no data is
    read, nothing is written)."""
    protocols = ood_protocols()
    spec = RunSpec.from_args(build_parser('ood', protocols).parse_args(argv))
    return plan(spec, 'ood', protocols, output_root(spec, 'ood'),
                torch.device('cpu'), Printer(True))


def tree(path: Path) -> dict:
    """The files below :obj:`path` but the output folder's lock file."""
    return {str(p.relative_to(path)): p.read_bytes()
            for p in sorted(path.rglob('*'))
            if p.is_file() and p.name != '.lock'}


def test_truncated_checkpoint_on_resume_is_named_as_such(tmp_path):
    argv = runner_argv(tmp_path, '--resume')
    job = planned(argv)[0].jobs[0]
    ckpt = job.stem.with_suffix('.ckpt')
    ckpt.parent.mkdir(parents=True)
    torch.save({'fingerprint': 'x', 'model': torch.zeros(1000)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])  # cut short by a kill
    before = tree(tmp_path / 'out')
    code, _, err = ood(argv)
    line = error_line(err, 'ood.py', alone=False)  # after the plan's lines
    assert code == 2
    assert 'another configuration' not in line, line
    name = str(ckpt.relative_to(tmp_path / 'out'))
    assert f'the checkpoint {name} cannot be read' in line
    assert 'Delete it' in line and '--force' in line
    assert tree(tmp_path / 'out') == before
    assert not (tmp_path / 'root').exists()


def test_compare_evals_on_resume_says_what_it_kept(tmp_path, capsys):
    argv = runner_argv(tmp_path, '--resume', '--compare-evals')
    job = planned(argv)[0].jobs[0]
    # A run finished earlier without --compare-evals (no by_eval_mode).
    job.stem.parent.mkdir(parents=True)
    job.stem.with_suffix('.json').write_text(json.dumps({
        'kind': 'pyg_hma.result', 'format': 1, 'dataset': 'NCI1',
        'backbone': job.backbone, 'method': job.method, 'seed': job.seed,
        'metric': 'acc', 'val': 0.5, 'test': {'test': 0.5},
        'primary_test': 'test', 'run_fingerprint': job.ident,
        'selected_epoch': 1, 'epochs_run': 1, 'wall_time_s': 1.0}))
    capsys.readouterr()
    cells = planned(argv)
    err = capsys.readouterr().err
    assert (job.seed, job.method) in cells[0].finished
    note = [line for line in err.splitlines() if '--compare-evals' in line]
    assert len(note) == 1, err
    assert 'does not apply to 1 run(s) finished earlier' in note[0]
    assert str(job.stem.with_suffix('.json').relative_to(
        tmp_path / 'out')) in note[0]
    assert '--force' in note[0]


def test_unreachable_ray_address_gives_up_after_a_bounded_wait(tmp_path):
    pytest.importorskip('ray')
    start = time.monotonic()
    code, _, err = ood(runner_argv(tmp_path, '--ray', '127.0.0.1:1',
                                   '--ray-timeout', '1'))
    took = time.monotonic() - start
    line = error_line(err, 'ood.py', alone=False)  # after the plan's lines
    assert code == 2 and '--ray 127.0.0.1:1: no Ray cluster answered' in line
    assert 'within 1 s' in line and 'ray start --head' in line
    assert took < 30, took
    assert nothing_written(tmp_path)


def test_the_default_wait_for_ray_is_bounded(tmp_path, monkeypatch):
    pytest.importorskip('ray')
    assert 0 < ray_backend.CONNECT_TIMEOUT_S <= 60
    monkeypatch.setattr(ray_backend, 'CONNECT_TIMEOUT_S', 0.5)
    start = time.monotonic()
    code, _, err = ood(runner_argv(tmp_path, '--ray', '127.0.0.1:1'))
    assert code == 2 and 'within 0.5 s' in error_line(err, 'ood.py', False)
    assert time.monotonic() - start < 30
    for bad, says in ((['--ray-timeout', '0'], 'positive number'),
                      (['--ray-timeout', '5'], 'needs --ray'),
                      (['--ray', 'nohost'], 'expects HOST:PORT')):
        if bad[0] == '--ray-timeout' and says != 'needs --ray':
            bad = ['--ray', '127.0.0.1:1'] + bad
        code, _, err = ood(runner_argv(tmp_path, *bad))
        assert code == 2 and says in error_line(err, 'ood.py'), (bad, err)
    assert nothing_written(tmp_path)


# --------------------------------------------------------------------------
# python -m pyg_hma.data: folders and counts before any data


def data(argv):
    return call(data_cli.main, argv)


PROG = 'python -m pyg_hma.data'


def test_prepare_with_a_root_that_is_a_file(tmp_path):
    a_file = tmp_path / 'notes'
    a_file.write_text('keep me')
    code, _, err = data(['prepare', '--dataset', 'NCI1', '--root',
                         str(a_file)])
    line = error_line(err, PROG)
    assert code == 2 and f'--root {a_file} cannot be used' in line
    assert 'is a file' in line
    assert a_file.read_text() == 'keep me'


@pytest.mark.parametrize('out', ['a_file', '/proc/pyg_hma_nope/exp'])
def test_export_to_an_out_that_cannot_be_written(tmp_path, out):
    if out == 'a_file':
        out = tmp_path / 'a_file'
        out.write_text('keep me')
    elif not Path('/proc/self').is_dir():
        pytest.skip('needs Linux /proc')
    code, _, err = data(['export', '--dataset', 'NCI1', '--out', str(out),
                         '--root', str(tmp_path / 'root')])
    line = error_line(err, PROG)
    assert code == 2 and f'--out {out} cannot be used' in line
    assert not (tmp_path / 'root').exists()  # before any data was loaded


@pytest.mark.parametrize('seeds', ['0', '-1'])
def test_export_of_no_seeds_is_refused(tmp_path, seeds):
    code, out, err = data(['export', '--dataset', 'NCI1', '--seeds', seeds,
                           '--out', str(tmp_path / 'exp'), '--root',
                           str(tmp_path / 'root')])
    line = error_line(err, PROG)
    assert code == 2 and '--seeds must be at least 1' in line
    assert line.endswith(f'got {seeds}')
    assert not (tmp_path / 'exp').exists()
    assert not (tmp_path / 'root').exists()


def test_unknown_dataset_is_refused_before_any_data(tmp_path):
    code, _, err = data(['prepare', '--dataset', 'NCI1', 'NCI2', '--root',
                         str(tmp_path / 'root')])
    assert code == 2 and 'NCI2' in error_line(err, PROG)
    assert not (tmp_path / 'root').exists()  # NCI1 not prepared either


def script_module(name: str):
    """``benchmarks/NAME.py`` imported as a module (registered, so that
    its dataclasses resolve)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f'bench_{name}', ROOT / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_speed_refuses_an_unknown_backbone_before_loading(tmp_path):
    speed = script_module('speed')
    code, _, err = call(speed.parse_args, [
        '--dataset', 'NCI1', '--backbone', 'foo', '--root',
        str(tmp_path / 'root')])
    line = error_line(err, None, alone=False)  # after speed.py's usage
    assert code == 2 and "unknown backbone 'foo'" in line
    assert not (tmp_path / 'root').exists()


# --------------------------------------------------------------------------
# Caches: files deleted or changed behind the completion marker


def tiny_graphs(flip=False):
    gen = torch.Generator().manual_seed(0)
    return [Data(x=torch.randn(3, 2, generator=gen),
                 edge_index=torch.tensor([[0, 1], [1, 2]]),
                 y=torch.tensor([(i % 2) ^ int(flip)])) for i in range(6)]


def tiny_cache(folder, builds):
    def build(tmp):
        builds.append(tmp)
        save_graphs(tmp, tiny_graphs(), {'num_graphs': 6}, 'tiny-v1')
    return load_cache(folder, build, lambda f: read_graphs(f, 'tiny'))


def test_cache_whose_data_was_deleted_is_rebuilt(tmp_path):
    folder, builds = tmp_path / 'processed' / 'tiny-v1', []
    tiny_cache(folder, builds)
    (folder / 'data.pt').unlink()  # the marker stays
    with pytest.warns(UserWarning, match='its data.pt is missing'):
        dataset, _ = tiny_cache(folder, builds)
    assert len(builds) == 2 and len(dataset) == 6


def test_cache_with_flipped_labels_is_noticed_and_rebuilt(tmp_path):
    folder, builds = tmp_path / 'processed' / 'tiny-v1', []
    tiny_cache(folder, builds)
    marker = (folder / DONE).read_text().splitlines()
    assert marker[0] == 'tiny-v1' and len(marker) == 3  # data.pt, meta.json
    # The same files, labels flipped: loads fine, but is not what was built.
    save_graphs(tmp_path / 'other', tiny_graphs(flip=True), {}, 'x')
    (folder / 'data.pt').write_bytes((tmp_path / 'other/data.pt')
                                     .read_bytes())
    with pytest.raises(Exception, match='data.pt changed after it was built'):
        check_digests(folder)
    with pytest.warns(UserWarning, match='data.pt changed after it was'):
        dataset, _ = tiny_cache(folder, builds)
    assert len(builds) == 2
    assert dataset._data.y.tolist() == [0, 1, 0, 1, 0, 1]
    check_digests(folder)


def test_verify_checks_every_cache_of_a_root(tmp_path):
    builds = []
    tiny_cache(tmp_path / 'processed' / 'tiny-v1', builds)
    code, out, err = data(['verify', '--root', str(tmp_path)])
    assert code == 0 and 'tiny-v1: OK' in out, (out, err)
    (tmp_path / 'processed/tiny-v1/meta.json').write_text('{}')
    code, out, err = data(['verify', '--root', str(tmp_path)])
    assert code == 1 and 'meta.json changed' in out, (out, err)
    code, _, err = data(['verify', '--root', str(tmp_path / 'missing')])
    assert code == 2 and 'no cache' in error_line(err, PROG)


def test_two_loads_at_once_build_a_cache_once(tmp_path):
    folder, builds, results, errors = tmp_path / 'c' / 'tiny-v1', [], [], []

    def slow(tmp):
        builds.append(tmp)
        time.sleep(0.5)
        save_graphs(tmp, tiny_graphs(), {'num_graphs': 6}, 'tiny-v1')

    def load():
        try:
            results.append(load_cache(folder, slow,
                                      lambda f: read_graphs(f, 'tiny')))
        except Exception as e:  # noqa: BLE001: reported below
            errors.append(e)
    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert len(builds) == 1


@needs_mirror
def test_two_prepares_at_once_on_a_fresh_root_both_succeed(tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    argv = [sys.executable, '-m', 'pyg_hma.data', 'prepare', '--dataset',
            'NCI1', '--root', str(tmp_path / 'root'), '--json']
    runs = [subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err
        assert json.loads(out.splitlines()[-1])['num_graphs'] == 4110
    left = [p.name for p in (tmp_path / 'root').rglob('*')
            if p.name.endswith('.tmp')]
    assert not left


# --------------------------------------------------------------------------
# OGB folders: RELEASE file deleted, split CSV truncated


def tiny_ogb_folder(folder: Path) -> None:
    """Three two-atom molecules in the layout of OGB's dataset folder."""
    from pyg_hma.data.ogb_mol import RELEASE_FILE, _to_csv_gz
    for sub in ('raw', 'split/scaffold', 'processed'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    n = 3
    _to_csv_gz(np.array([[0, 1]] * n), folder / 'raw/edge.csv.gz')
    _to_csv_gz(np.ones((2 * n, 9), dtype=np.int64),
               folder / 'raw/node-feat.csv.gz')
    _to_csv_gz(np.ones((n, 3), dtype=np.int64),
               folder / 'raw/edge-feat.csv.gz')
    _to_csv_gz(np.full(n, 2), folder / 'raw/num-node-list.csv.gz')
    _to_csv_gz(np.ones(n, dtype=np.int64), folder / 'raw/num-edge-list.csv.gz')
    _to_csv_gz(np.array([0, 1, 0]), folder / 'raw/graph-label.csv.gz')
    for split, idx in (('train', [0]), ('valid', [1]), ('test', [2])):
        _to_csv_gz(np.array(idx), folder / f'split/scaffold/{split}.csv.gz')
    (folder / RELEASE_FILE).write_text('tiny\n')


@pytest.fixture
def ogb_root(tmp_path):
    pytest.importorskip('ogb')
    tiny_ogb_folder(tmp_path / 'ogbg_molbace')
    with pytest.warns(UserWarning, match='OGB has 1513'):
        code, _, err = data(['prepare', '--dataset', 'ogbg-molbace',
                             '--root', str(tmp_path)])
    assert code == 0, err
    return tmp_path


def test_ogb_folder_without_its_release_file_is_one_line(ogb_root):
    (ogb_root / 'ogbg_molbace' / 'RELEASE_v1.txt').unlink()
    code, _, err = data(['prepare', '--dataset', 'ogbg-molbace', '--root',
                         str(ogb_root)])
    assert code == 2 and 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'RELEASE_v1.txt' in lines[0], err
    assert 'Delete it to rebuild' in lines[0]


def test_ogb_folder_with_a_truncated_split_is_one_line(ogb_root):
    split = ogb_root / 'ogbg_molbace/split/scaffold/train.csv.gz'
    split.write_bytes(split.read_bytes()[:12])
    code, _, err = data(['prepare', '--dataset', 'ogbg-molbace', '--root',
                         str(ogb_root)])
    assert code == 2 and 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'cannot be read' in lines[0], err
    assert 'Delete it to rebuild' in lines[0]


# --------------------------------------------------------------------------
# HMAReadout


@pytest.mark.parametrize('kwargs,says', [
    (dict(label_dim=0), 'label_dim >= 1'),
    (dict(label_dim=-2), 'label_dim >= 1'),
    (dict(heads=0), 'heads >= 1'),
])
def test_readout_refuses_sizes_it_cannot_use(kwargs, says):
    with pytest.raises(ValueError, match=says):
        HMAReadout(8, 2, **kwargs)


def test_readout_refuses_integer_keys():
    readout = HMAReadout(8, 2, label_dim=8, memory_size=4)
    x, y = torch.randn(3, 8), torch.tensor([0, 1, 0])
    with pytest.raises(TypeError, match='floating point keys'):
        readout(x, y, key=torch.ones(3, 8, dtype=torch.long))
    assert int((readout.queue_labels >= 0).sum()) == 0  # nothing written
    readout(x, y, key=torch.randn(3, 8))


@needs_mirror
def test_ogb_folder_built_here_is_rebuilt_once_when_damaged(tmp_path):
    pytest.importorskip('rdkit')
    from pyg_hma.data.ogb_mol import load_ogb_mol
    load_ogb_mol('ogbg-molbace', root=tmp_path)
    folder = tmp_path / 'ogbg_molbace'
    split = folder / 'split/scaffold/valid.csv.gz'
    split.write_bytes(split.read_bytes()[:12])
    (folder / 'RELEASE_v1.txt').unlink()
    with pytest.warns(UserWarning, match='Rebuilding the OGB folder'):
        splits = load_ogb_mol('ogbg-molbace', root=tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == \
        (1210, 151, 152)
    assert (folder / 'RELEASE_v1.txt').is_file()
