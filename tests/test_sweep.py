"""Hyperparameter sweeps (pyg_hma.study.sweep, benchmarks/sweep.py): the
search spaces, the choice on validation only, resuming, the confirmation on
fresh seeds, and clear errors before any training."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyg_hma.data import find_mirror
from pyg_hma.runners.spec import check_names
from pyg_hma.study import sweep as sw
from pyg_hma.train.results import find_results

pytest.importorskip('optuna')

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)  # the runner sets 1 thread


def study_trials(out):
    import optuna
    study = optuna.load_study(study_name=sw.STUDY_NAME,
                              storage=f"sqlite:///{out / 'study.db'}")
    return study.get_trials(deepcopy=False)


def complete(trials):
    return [t for t in trials if t.state.name == 'COMPLETE']


# --------------------------------------------------------------------------
# Spaces and parsing
# --------------------------------------------------------------------------

def test_paper_space_hma_is_m_times_batch_by_k():
    space = sw.resolve_space(sw.paper_space('hma'), batch_size=32)
    assert space == {'hma.memory_size': [32, 64, 96],
                     'hma.slots_per_class': [8, 16, 32, 64]}
    assert len(sw.grid(space)) == 12


@pytest.mark.parametrize('method', ['erm', 'irm', 'vrex', 'dropnode'])
def test_erm_default_space_has_the_same_budget_as_hma(method):
    hma = sw.grid(sw.resolve_space(sw.paper_space('hma'), 32))
    other = sw.grid(sw.resolve_space(sw.paper_space(method), 32))
    assert len(other) == len(hma) == 12
    assert set(sw.paper_space(method)) == {'backbone.dropout', 'train.lr'}


def test_parse_param_and_trial_args():
    assert sw.parse_param('M=1x,2x') == ('hma.memory_size', ['1x', '2x'])
    assert sw.parse_param('lr=1e-3,3e-4') == ('train.lr', [1e-3, 3e-4])
    assert sw.parse_param('momentum=0.99,none') == ('momentum', [0.99, None])
    assert sw.parse_param('backbone.pooling=mean,max') == (
        'backbone.pooling', ['mean', 'max'])
    args = sw.trial_args({'hma.memory_size': 64, 'train.lr': 0.001,
                          'momentum': None, 'hma.heads': 2})
    assert args == ['--memory-size', '64', '--lr', '0.001',
                    '--momentum', 'none', '--set', 'hma.heads=2']
    # A bare number would be a count for the runner's --seeds.
    assert sw.seeds_arg([100]) == '100-100'
    assert sw.seeds_arg([100, 101, 102]) == '100-102'
    assert sw.seeds_arg([0, 5]) == '0,5'
    assert sw.parse_seed_list('3', 100, '--search-seeds') == [100, 101, 102]
    assert sw.parse_seed_list('10', 0, '--confirm-seeds') == list(range(10))
    assert sw.parse_seed_list('0', 0, '--confirm-seeds') == []


@pytest.mark.parametrize('text', ['hma.memory_size', 'memory_size=',
                                  'foo.bar=1,2', 'hma=1', 'lr=1e-3,1e-3'])
def test_malformed_param_is_refused(text):
    with pytest.raises(sw.SweepError, match='--param'):
        sw.parse_param(text)


# --------------------------------------------------------------------------
# Errors: one line, exit status 2, before any training
# --------------------------------------------------------------------------

BAD = [
    (['--runner', 'nope'], "invalid choice: 'nope'"),
    (['--dataset', 'NOPE'], "no dataset 'NOPE'"),
    (['--method', 'nope'], "unknown method 'nope'"),
    (['--param', 'hma.memory_size'], '--param expects KEY=V1,V2'),
    (['--param', 'hma.bogus=1,2'], "hma has no setting 'bogus'"),
    (['--param', 'momentum=2,3'], '--momentum expects a number'),
    (['--search-seeds', '0-3', '--confirm-seeds', '2'], 'overlap'),
    (['--search-seeds', 'x'], '--search-seeds expects'),
    (['--', '--seeds', '3'], 'set by the sweep itself'),
    (['--', '--memory-size', '64'], 'is swept'),
    (['--', '--bogus'], 'unrecognized arguments: --bogus'),
]


@pytest.mark.parametrize('extra,message', BAD)
def test_bad_input_fails_with_one_line_before_training(extra, message,
                                                       tmp_path, capsys):
    cut = extra.index('--') if '--' in extra else len(extra)
    line = (['--runner', 'ood', '--dataset', 'PROTEINS', '--method', 'hma']
            + extra[:cut] + ['--out', str(tmp_path / 'out'), '--quiet']
            + extra[cut:])  # a later option replaces an earlier one
    assert sw.main(line) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('sweep.py: error:')
    assert message in err
    assert not (tmp_path / 'out').exists()


def test_the_script_fails_with_exit_status_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'sweep.py'), '--runner',
         'ood', '--dataset', 'NCI1', '--method', 'nope', '--out',
         str(tmp_path / 'out')], capture_output=True, text=True,
        cwd=tmp_path, timeout=300,
        env={'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1',
             'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"sweep.py: error: unknown method 'nope'; choose from erm, irm, "
        f"vrex, dropedge, dropnode, mmixup, rma, abd, abd+syn, abd+rma, hma"]


def test_without_optuna_one_line_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'optuna', None)  # import fails
    assert sw.main(['--runner', 'ood', '--dataset', 'NCI1', '--method',
                    'hma']) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("sweep.py: error: sweeps need optuna, an optional "
                   "dependency: pip install 'pyg_hma[sweep]'")


# --------------------------------------------------------------------------
# The sweep's logic with a fake runner (no training)
# --------------------------------------------------------------------------

class FakeRunner:
    r"""Stands in for :func:`run_runner`: validation and test of a run are
    set per learning rate, and they disagree: the lr with the best test
    score has the worst validation score."""
    VAL = {0.1: 0.2, 0.01: 0.7, 0.001: 0.5}
    TEST = {0.1: 0.9, 0.01: 0.1, 0.001: 0.3}

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, runner, protocols, spec, stdout=None):
        check_names(spec, protocols)  # a valid run specification
        lr = spec.settings['train']['lr']  # the trial's, as --set sets it
        self.calls.append(Call(spec))
        if lr == self.fail_on:
            raise KeyboardInterrupt  # the sweep stopped mid-trial
        return [dict(seed=s, val=self.VAL[lr] + 0.01 * (s % 2),
                     test={'test': self.TEST[lr]}, primary_test='test',
                     metric='mcc') for s in spec.seeds]


class Call(list):
    r"""A run specification the sweep passed to the runner, read like the
    runner's command line it stands for (``--lr``, ``--seeds A-B``,
    ``--out``, ``--resume``), with the specification as :attr:`spec`."""
    def __init__(self, spec):
        self.spec = spec
        super().__init__(['--lr', str(spec.settings['train']['lr']),
                          '--seeds', sw.seeds_arg(spec.seeds),
                          '--out', str(spec.out)]
                         + (['--resume'] if spec.resume else []))


FAKE_ARGV = ['--runner', 'ood', '--dataset', 'PROTEINS', '--method', 'erm',
             '--param', 'lr=0.1,0.01,0.001', '--search-seeds', '2',
             '--confirm-seeds', '3', '--quiet']


def test_choice_follows_validation_never_test(tmp_path, monkeypatch, capsys):
    fake = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', fake)
    assert sw.main(FAKE_ARGV + ['--out', str(tmp_path)]) == 0
    best = json.loads((tmp_path / 'best.json').read_text())
    assert best['complete'] and len(best['trials']) == 3
    assert best['best']['params'] == {'train.lr': 0.01}  # test: 0.1 is best
    assert best['best']['val_mean'] == pytest.approx(0.705)
    assert best['best']['command'].endswith('--lr 0.01 --seeds 0-2')
    assert all('test' not in t for t in best['trials'])
    # Search on seeds 100-101, the confirmation on 0-2, the best lr only.
    search, confirm = fake.calls[:3], fake.calls[3:]
    assert all(c[c.index('--seeds') + 1] == '100-101' for c in search)
    assert [c[c.index('--seeds') + 1] for c in confirm] == ['0-2']
    assert confirm[0][confirm[0].index('--lr') + 1] == '0.01'
    assert best['confirm']['seeds'] == [0, 1, 2]
    assert best['confirm']['test_mean'] == pytest.approx(0.1)
    out = capsys.readouterr().out
    assert '| t01 (best) | 0.01 | 0.705 ± 0.007 | 2 |' in out
    assert 'Confirmation of t01 on seeds [0, 1, 2]' in out
    # Trials write under OUT/trials/tNN, the confirmation under OUT/confirm.
    assert {c[c.index('--out') + 1] for c in search} == {
        str(tmp_path / 'trials' / t) for t in ('t00', 't01', 't02')}
    assert confirm[0][confirm[0].index('--out') + 1] == str(
        tmp_path / 'confirm')


def test_choose_best_reads_validation_only():
    trials = [dict(trial='t00', val_mean=0.4, test_mean=0.9),
              dict(trial='t01', val_mean=0.6, test_mean=0.1),
              dict(trial='t02', val_mean=0.6, test_mean=0.5),
              dict(trial='t03', val_mean=None)]
    assert sw.choose_best(trials)['trial'] == 't01'  # the first of equals
    runs = [dict(seed=0, val=0.5, test={'test': 1.0}, metric='mcc'),
            dict(seed=1, val=0.7, test={'test': 0.0}, metric='mcc')]
    score = sw.score_runs(runs)
    assert score['val_mean'] == pytest.approx(0.6) and score['n'] == 2
    assert 'test' not in json.dumps(score)


def test_interrupted_sweep_resumes_without_rerunning(tmp_path, monkeypatch):
    # First: the trial of lr 0.001 is interrupted (after the others, or
    # before them: GridSampler's order is its own).
    first = FakeRunner(fail_on=0.001)
    monkeypatch.setattr(sw, 'run_runner', first)
    with pytest.raises(KeyboardInterrupt):
        sw.main(FAKE_ARGV + ['--out', str(tmp_path)])
    done_first = {t.params['train.lr'] for t in complete(
        study_trials(tmp_path))}
    assert 0.001 not in done_first
    # Again: only the grid points without a finished trial run, the
    # interrupted one with --resume into the same folder.
    second = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', second)
    assert sw.main(FAKE_ARGV + ['--out', str(tmp_path)]) == 0
    rerun = {float(c[c.index('--lr') + 1]) for c in second.calls[:-1]}
    assert rerun == {0.1, 0.01, 0.001} - done_first
    assert all('--resume' in c for c in second.calls)
    assert str(tmp_path / 'trials' / 't02') in second.calls[
        [float(c[c.index('--lr') + 1]) for c in second.calls].index(0.001)]
    trials = study_trials(tmp_path)
    assert sorted(t.params['train.lr'] for t in complete(trials)) == [
        0.001, 0.01, 0.1]
    # A third call trains nothing new (the confirmation's finished runs are
    # the runner's to keep).
    third = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', third)
    assert sw.main(FAKE_ARGV + ['--out', str(tmp_path)]) == 0
    assert len(third.calls) == 1 and '0-2' in third.calls[0]
    assert len(complete(study_trials(tmp_path))) == 3


def test_trial_left_running_by_a_killed_sweep_is_retried(tmp_path,
                                                         monkeypatch):
    sweep = sw.sweep_from_args(FAKE_ARGV + ['--out', str(tmp_path)])
    study = sweep.open_study()
    trial = study.ask()  # a process killed while this trial ran
    for key, values in sweep.space.items():
        trial.suggest_categorical(key, values)
    lost = trial.params['train.lr']
    fake = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', fake)
    assert sw.main(FAKE_ARGV + ['--out', str(tmp_path)]) == 0
    assert len(fake.calls) == 4  # 3 trials, the lost one once, 1 confirm
    trials = study_trials(tmp_path)
    assert sorted(t.params['train.lr'] for t in complete(trials)) == [
        0.001, 0.01, 0.1]
    assert [t.params['train.lr'] for t in trials
            if t.state.name == 'FAIL'] == [lost]


def test_another_sweep_in_the_same_folder_is_refused(tmp_path, monkeypatch,
                                                     capsys):
    monkeypatch.setattr(sw, 'run_runner', FakeRunner())
    assert sw.main(FAKE_ARGV + ['--out', str(tmp_path), '--n-trials',
                                '1']) == 0
    other = [a if a != 'lr=0.1,0.01,0.001' else 'lr=0.1,0.01'
             for a in FAKE_ARGV]
    assert sw.main(other + ['--out', str(tmp_path)]) == 2
    assert 'holds another sweep (its space differ)' in capsys.readouterr().err


def test_summary_after_each_trial_continues_on_a_new_folder(tmp_path,
                                                          monkeypatch):
    # A sweep stopped after 2 of 3 trials, its folder then lost but its
    # best.json kept (committed): a new folder continues from it.
    first = tmp_path / 'first'
    fake = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', fake)
    assert sw.main(FAKE_ARGV + ['--out', str(first), '--n-trials', '2']) == 0
    kept = tmp_path / 'kept.json'
    kept.write_text((first / 'best.json').read_text())
    partial = json.loads(kept.read_text())
    assert not partial['complete'] and len(partial['trials']) == 2
    done = {t['params']['train.lr'] for t in partial['trials']}

    second = tmp_path / 'second'
    fake = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', fake)
    assert sw.main(FAKE_ARGV + ['--out', str(second),
                                '--continue-from', str(kept)]) == 0
    trained = [float(c[c.index('--lr') + 1]) for c in fake.calls]
    assert trained[:-1] == sorted({0.1, 0.01, 0.001} - done)  # 1 trial
    assert fake.calls[-1][fake.calls[-1].index('--seeds') + 1] == '0-2'
    full = json.loads((second / 'best.json').read_text())
    assert full['complete'] and full['confirm']['seeds'] == [0, 1, 2]
    for t in partial['trials']:  # the carried scores, unchanged
        assert t in [dict(u, optuna_number=t['optuna_number'])
                     for u in full['trials']]

    # A complete summary with its confirmation: nothing trains at all.
    third = tmp_path / 'third'
    fake = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', fake)
    assert sw.main(FAKE_ARGV + ['--out', str(third), '--continue-from',
                                str(second / 'best.json')]) == 0
    assert fake.calls == []
    again = json.loads((third / 'best.json').read_text())
    assert again['confirm'] == full['confirm']
    assert again['best'] == full['best']


@pytest.mark.parametrize('change, message', [
    (['--search-seeds', '3'], 'its search_seeds differ'),
    (['--method', 'irm'], 'its method differ'),
    ([], 'not a sweep summary'),
])
def test_continue_from_another_sweep_is_refused(tmp_path, monkeypatch,
                                                capsys, change, message):
    monkeypatch.setattr(sw, 'run_runner', FakeRunner())
    assert sw.main(FAKE_ARGV + ['--out', str(tmp_path / 'a'),
                                '--n-trials', '1']) == 0
    summary = tmp_path / 'a' / 'best.json'
    if not change:
        summary = tmp_path / 'other.json'
        summary.write_text('{"kind": "something else"}')
    fake = FakeRunner()
    monkeypatch.setattr(sw, 'run_runner', fake)
    argv = list(FAKE_ARGV)
    for i in range(0, len(change), 2):
        argv[argv.index(change[i]) + 1] = change[i + 1]
    assert sw.main(argv + ['--out', str(tmp_path / 'b'), '--continue-from',
                           str(summary)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and '--continue-from' in err[0]
    assert fake.calls == [] and not (tmp_path / 'b').exists()


# --------------------------------------------------------------------------
# A real tiny sweep: PROTEINS, --quick, 2 trials x 1 search seed, 1 confirm
# --------------------------------------------------------------------------

real = pytest.mark.skipif(find_mirror() is None, reason='needs the offline '
                          'data mirror (../shared/data)')


@pytest.fixture(scope='module')
def real_sweep(tmp_path_factory):
    # Shared with test_runners.py: the dataset is processed once a session.
    data_root = tmp_path_factory.getbasetemp() / 'pyg_hma_data'
    out = tmp_path_factory.mktemp('sweep') / 'PROTEINS-hma'
    argv = ['--runner', 'ood', '--dataset', 'PROTEINS', '--method', 'hma',
            '--param', 'lr=1e-2,1e-4', '--search-seeds', '1',
            '--confirm-seeds', '1', '--quick', '--quiet', '--out', str(out)]
    runner_args = ['--', '--root', str(data_root)]
    # Stopped after one trial, then run again to the end.
    assert sw.main(argv + ['--n-trials', '1'] + runner_args) == 0
    first = json.loads((out / 'best.json').read_text())
    first_runs = {p: p.stat().st_mtime_ns
                  for p in (out / 'trials').rglob('seed*.json')}
    first_trials = complete(study_trials(out))
    assert sw.main(argv + runner_args) == 0
    return dict(out=out, first=first, first_runs=first_runs,
                first_trials=first_trials,
                best=json.loads((out / 'best.json').read_text()))


@real
def test_real_sweep_best_has_the_highest_mean_validation(real_sweep):
    out, best = real_sweep['out'], real_sweep['best']
    assert best['complete'] and len(best['trials']) == 2
    val = {}
    for t in best['trials']:
        runs = find_results([out / 'trials' / t['trial']])
        assert [r['seed'] for r in runs] == [100]
        assert t['val_mean'] == pytest.approx(runs[0]['val'])
        val[t['trial']] = runs[0]['val']
    assert best['best']['trial'] == max(val, key=val.get)
    assert best['best']['command'].startswith(
        'python benchmarks/ood.py --dataset PROTEINS --quick --root ')
    assert (out / 'summary.md').read_text().count('| t0') == 2


@real
def test_real_sweep_resume_keeps_finished_trials(real_sweep):
    first, out = real_sweep['first'], real_sweep['out']
    assert not first['complete'] and len(first['trials']) == 1
    assert first['confirm'] is None
    # The first trial was not run again: same study trial, same files.
    before = real_sweep['first_trials']
    trials = study_trials(out)
    assert len(trials) == 2 and len(complete(trials)) == 2
    again = [t for t in trials if t.number == before[0].number][0]
    assert again.params == before[0].params
    assert again.datetime_complete == before[0].datetime_complete
    for path, mtime in real_sweep['first_runs'].items():
        assert path.stat().st_mtime_ns == mtime


@real
def test_real_sweep_confirms_on_fresh_seeds(real_sweep):
    out, best = real_sweep['out'], real_sweep['best']
    conf = best['confirm']
    runs = find_results([out / 'confirm'])
    assert [r['seed'] for r in runs] == conf['seeds'] == [0]
    assert not set(conf['seeds']) & set(best['search_seeds'])
    assert best['search_seeds'] == [100]
    assert runs[0]['config']['train']['lr'] == best['best']['params'][
        'train.lr']
    assert conf['val_mean'] == pytest.approx(runs[0]['val'])
    assert conf['test_mean'] == pytest.approx(runs[0]['test']['test'])


def test_report_and_collect_leave_out_sweep_runs_below_a_folder(tmp_path):
    # benchmarks/report.py and reproduction.py collect read the same rule.
    from pyg_hma.study.rows import collect
    from pyg_hma.train.results import (RESULT_KIND, in_sweep, read_runs,
                                       write_json)
    sweep = tmp_path / 'sweeps' / 'NCI1-hma'
    trial = sweep / 'trials' / 't00' / 'NCI1' / 'gcn' / 'hma' / 'seed100.json'
    confirm = sweep / 'confirm' / 'NCI1' / 'gcn' / 'hma' / 'seed0.json'
    plain = tmp_path / 'ood' / 'NCI1' / 'gcn' / 'hma' / 'seed0.json'
    (sweep / 'study.db').parent.mkdir(parents=True)
    (sweep / 'study.db').touch()
    assert in_sweep(trial, [tmp_path])
    assert in_sweep(confirm, [tmp_path])
    assert not in_sweep(plain, [tmp_path])
    assert not in_sweep(confirm, [sweep / 'confirm'])
    assert not in_sweep(confirm, [tmp_path, sweep / 'confirm'])
    for path, seed in ((trial, 100), (confirm, 0), (plain, 0)):
        write_json(path, {
            'kind': RESULT_KIND, 'format': 1, 'runner': 'ood', 'table': 6,
            'dataset': 'NCI1', 'backbone': 'gcn', 'backbone_label': 'GCN',
            'method': 'hma', 'seed': seed, 'metric': 'mcc',
            'primary_test': 'test', 'val': 0.5, 'test': {'test': 0.2},
            'selected_epoch': 3, 'epochs_run': 5, 'wall_time_s': 1.0,
            'device': 'cpu', 'device_name': 'cpu', 'quick': False,
            'run_fingerprint': str(path.relative_to(tmp_path)),
            'commit': 'abc', 'engine': 3, 'config': {}})
    runs = tmp_path / 'runs.csv'
    collect([tmp_path], runs)  # the plain run only
    assert [r['fingerprint'] for r in read_runs(runs)] == [
        str(plain.relative_to(tmp_path))]
