"""Trust: bad input fails early and clearly, a run never destroys a finished
result, the output folder is locked, and the report cannot mislead.
Partly generated input (Hypothesis)."""
import contextlib
import hashlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import runner_module
from pyg_hma import HMAReadout
from pyg_hma.data import find_mirror
from pyg_hma.runners import main as runner_main
from pyg_hma.runners.cli import parse_seeds
from pyg_hma.runners.outputs import OutputFolder
from pyg_hma.train.results import aggregate, find_results, write_json

PROTOCOLS = None


def ood_main(argv):
    """benchmarks/ood.py's main with its protocols, without importing the
    script: the protocols are read from the runner file once."""
    global PROTOCOLS
    if PROTOCOLS is None:
        PROTOCOLS = runner_module('ood').PROTOCOLS
    return runner_main(argv, runner='ood', protocols=PROTOCOLS)


def run_cli(argv):
    """(exit status, stderr) of one invocation, never raising."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            code = ood_main(argv)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def tree(path: Path) -> dict:
    """{relative path: sha256} of every file below path."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes())
            .hexdigest() for p in sorted(path.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / 'pyg_hma_data'


needs_mirror = pytest.mark.skipif(find_mirror() is None,
                                  reason='needs the offline data mirror')


# --------------------------------------------------------------------------
# Bad command-line input: exit 2, one line, nothing written


BAD_OPTIONS = {
    '--batch-size': st.sampled_from(['0', '1', '-3']),
    '--epochs': st.sampled_from(['0', '-1']),
    '--lr': st.sampled_from(['0', '-0.1', 'nan', 'inf', 'abc']),
    '--patience': st.sampled_from(['-1', 'x']),
    '--threads': st.sampled_from(['-1', '1.5']),
    '--jobs': st.sampled_from(['0', '-2']),
    '--memory-size': st.sampled_from(['0', '-1']),
    '--dropout': st.sampled_from(['1.0', '-0.5', '2']),
    '--seeds': st.sampled_from(['1,1', '-1', 'a-b', '', '3-1', '0,0,1']),
    '--device': st.sampled_from(['cuda', 'cuda:3', 'tpu', 'gpu0']),
    '--mirror': st.just('NO_SUCH_DIR'),
    '--exported': st.just('NO_SUCH_DIR'),
    '--method': st.sampled_from(['hmaa', 'ERM', 'all-of-them']),
    '--backbone': st.sampled_from(['gat', 'GCN']),
    '--set': st.sampled_from(['hma.nope=1', 'train.epochs=0', 'x=1',
                              'backbone.conv=gcn', 'hma.rma=false',
                              'train.lr=abc', 'train.lr=-1',
                              'train.batch_size=2.5', 'train.loss=mse',
                              'train.weight_decay=-1', 'method.nope=1',
                              'method.drop_ratio=1.5',
                              'method.penalty_weight=abc',
                              'train.drop_ratio=0.3']),
}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(st.sampled_from(sorted(BAD_OPTIONS)), min_size=1,
                    max_size=3, unique=True).flatmap(
    lambda opts: st.tuples(*[st.tuples(st.just(o), BAD_OPTIONS[o])
                             for o in opts])),
       dataset=st.sampled_from(['NCI1', 'PROTEINS', 'nci1', 'CIFAR']))
def test_bad_command_lines_fail_early_and_clearly(tmp_path, bad, dataset):
    import tempfile  # tmp_path is shared by all examples: one folder each
    example = Path(tempfile.mkdtemp(dir=tmp_path))
    out = example / 'out'
    argv = ['--dataset', dataset, '--out', str(out), '--quick']
    for option, value in bad:
        if value == 'NO_SUCH_DIR':
            value = str(example / 'missing')
        argv += [option, value]
    code, err = run_cli(argv)
    assert code == 2, (argv, err)
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1 and lines[0].startswith('ood.py: error: '), err
    assert not out.exists()


def test_paths_that_are_files_or_unwritable(tmp_path):
    a_file = tmp_path / 'file'
    a_file.write_text('keep me')
    for option in ('--out', '--root'):
        code, err = run_cli(['--dataset', 'NCI1', option, str(a_file)])
        assert code == 2 and f'{option} {a_file} is a file' in err
    assert a_file.read_text() == 'keep me'
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / 'ro'
        locked.mkdir()
        locked.chmod(0o500)
        try:
            code, err = run_cli(['--dataset', 'NCI1', '--out',
                                 str(locked / 'sub')])
            assert code == 2 and 'cannot be written' in err
        finally:
            locked.chmod(0o700)


def test_duplicate_seeds_are_rejected():
    with pytest.raises(Exception, match='more than once'):
        parse_seeds('1,1')
    with pytest.raises(Exception, match='more than once'):
        parse_seeds('3,4,3')
    assert parse_seeds('4,3') == [4, 3]


# --------------------------------------------------------------------------
# Finished results are never destroyed


@needs_mirror
def test_a_run_never_destroys_a_finished_result(tmp_path, data_root):
    out = tmp_path / 'out'
    base = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'erm',
            '--seeds', '0-0', '--epochs', '1', '--root', str(data_root),
            '--out', str(out)]
    assert run_cli(base)[0] == 0
    result = out / 'PROTEINS/gin-max/erm/seed0.json'
    before = tree(out)
    assert result.is_file()
    # Rerunning (same or other settings) without --resume, or resuming
    # with another setting, is refused up front, naming the file.
    for extra in ([], ['--lr', '0.5'], ['--resume', '--lr', '0.5']):
        code, err = run_cli(base + extra)
        assert code == 2 and 'erm/seed0.json' in err and '--force' in err
        assert tree(out) == before, extra
    # --resume with the same configuration keeps it.
    assert run_cli(base + ['--resume'])[0] == 0
    assert json.loads(result.read_text()) == json.loads(
        (out / 'PROTEINS/gin-max/erm/seed0.json').read_text())
    # --force moves the old result aside; nothing is deleted.
    old = result.read_bytes()
    assert run_cli(base + ['--lr', '0.5', '--force'])[0] == 0
    moved = list((out / '.superseded').rglob('erm/seed0.json'))
    assert len(moved) == 1 and moved[0].read_bytes() == old
    assert json.loads(result.read_text())['config']['train']['lr'] == 0.5
    # The report does not count the moved-aside run.
    assert len(find_results([out])) == 1


@needs_mirror
def test_output_folder_is_locked_and_cleaned(tmp_path, data_root):
    out = tmp_path / 'out'
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'erm',
            '--seeds', '0-0', '--epochs', '1', '--root', str(data_root),
            '--out', str(out)]
    with OutputFolder(out):
        code, err = run_cli(argv)
    assert code == 2 and 'in use by another run (PID' in err
    # Leftovers of killed atomic writes go; an earlier attempt's log stays,
    # and this attempt logs to a file of its own.
    leftover = out / 'PROTEINS/gin-max/erm/.seed0.json.x1.tmp'
    leftover.mkdir(parents=True)
    (leftover / 'seed0.json').write_text('{"half": ')
    old_log = out / 'PROTEINS/gin-max/erm/seed0.log'
    old_log.write_text('an interrupted attempt\n')
    assert run_cli(argv)[0] == 0
    assert not leftover.exists()
    assert old_log.read_text() == 'an interrupted attempt\n'
    assert (out / 'PROTEINS/gin-max/erm/seed0.attempt2.log').is_file()


# --------------------------------------------------------------------------
# The report cannot mislead


def result(seed, test, fingerprint=None, lr=0.001, **changes):
    rec = {'kind': 'pyg_hma.result', 'format': 1, 'runner': 'ood',
           'table': 6, 'dataset': 'NCI1', 'backbone': 'gcn',
           'backbone_label': 'GCN', 'method': 'erm', 'seed': seed,
           'metric': 'mcc', 'primary_test': 'test', 'val': 0.5,
           'test': {'test': test}, 'selected_epoch': 1, 'epochs_run': 2,
           'wall_time_s': 1.0, 'run_fingerprint': fingerprint or f'f{seed}',
           'config': {'train': {'lr': lr}}}
    rec.update(changes)
    return rec


def test_report_counts_runs_once_and_never_mixes_configurations(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    for seed, test in enumerate([0.1, 0.2, 0.3]):
        write_json(a / f'erm/seed{seed}.json', result(seed, test))
    shutil.copytree(a, b)  # the same runs again in another folder
    (a / '.superseded/old/erm').mkdir(parents=True)
    write_json(a / '.superseded/old/erm/seed0.json', result(0, 0.9, 'g0'))
    (a / 'erm/seed7.json').write_text('{"kind": "pyg_hma.result", "da')
    rec = result(8, 0.4, 'f8')
    del rec['metric']
    write_json(a / 'erm/seed8.json', rec)
    write_json(a / 'lr/seed0.json', result(0, 0.6, 'h0', lr=0.1))
    write_json(a / 'nan/seed5.json', result(5, math.nan, 'n5'))
    skipped, duplicates = [], []
    records = find_results([a, b], skipped, duplicates)
    assert sorted(r['run_fingerprint'] for r in records) == \
        ['f0', 'f1', 'f2', 'h0', 'n5']
    assert len(duplicates) == 3
    reasons = dict((Path(p).name, why) for p, why in skipped)
    assert 'not valid JSON' in reasons['seed7.json']
    assert 'lacks metric' in reasons['seed8.json']
    rows = aggregate(records)
    labels = sorted(r['method_label'] for r in rows)
    assert len(rows) == 2 and all('[config ' in x for x in labels)
    main_row = next(r for r in rows if r['seeds'] == 4)
    assert main_row['non_finite'] == 1
    assert main_row['test_mean'] == pytest.approx(0.2)  # finite ones only


# --------------------------------------------------------------------------
# The layer under generated bad tensors


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(0, 5), cols=st.sampled_from([3, 8, 9]),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.int64,
                              torch.bool]),
       label=st.sampled_from([None, 'ok', 'float', 'range', 'shape']),
       poison=st.sampled_from([None, math.nan, math.inf]),
       training=st.booleans())
def test_readout_raises_clear_errors_or_stays_finite(rows, cols, dtype, label,
                                                     poison, training):
    torch.manual_seed(0)
    layer = HMAReadout(8, num_classes=3, memory_size=4, slots_per_class=2,
                       label_dim=8, inference='independent')
    layer.train(training)
    x = torch.randn(rows, cols).to(dtype) if dtype.is_floating_point else \
        torch.randint(0, 2, (rows, cols)).to(dtype)
    if poison is not None and rows and dtype.is_floating_point:
        x[0, 0] = poison
    y = {None: None, 'ok': torch.randint(0, 3, (rows, )),
         'float': torch.zeros(rows), 'range': torch.full((rows, ), 7),
         'shape': torch.zeros(rows + 1, dtype=torch.long)}[label]
    try:
        out = layer(x, y=y)
    except (ValueError, TypeError) as e:
        assert str(e) and '\n' not in str(e)
        return
    assert out.shape == (rows, 3)
    if not training and rows > 1:
        assert torch.isfinite(out[1:]).all()  # a bad row spoils only itself
    assert torch.isfinite(layer.queue_keys).all()
