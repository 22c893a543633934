"""Every runner's --quick mode end to end, its result files, --resume and
the report built from them."""
import csv
import json
import math
import shutil

import pytest
import torch

from pyg_hma.data import find_mirror
from pyg_hma.runners.cli import parse_seeds
from pyg_hma.study.tables import report_markdown
from pyg_hma.train.results import (ENGINE_VERSION, find_results, load_paper,
                                   paper_number)

from conftest import runner_module as runner


pytestmark = pytest.mark.skipif(
    find_mirror() is None, reason='needs the offline data mirror '
    '(../shared/data)')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the runners set 1 thread


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp('runners')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    # Shared with test_engine.py: each dataset is processed once per session.
    return tmp_path_factory.getbasetemp() / 'pyg_hma_data'


# (runner, dataset, methods, backbone folder)
QUICK_RUNS = [
    ('ood', 'PROTEINS', ['erm', 'hma'], 'gin-max'),
    ('ood', 'CMNIST', ['irm', 'abd+rma'], 'mlp'),
    ('ogb_mol', 'ogbg-molbace', ['erm', 'hma'], 'gin'),
    ('tu_id', 'IMDB-BINARY', ['dropnode', 'mmixup'], 'gin-gmixup'),
]


@pytest.fixture(scope='module')
def quick_results(workdir, data_root):
    out = {}
    for name, dataset, methods, folder in QUICK_RUNS:
        argv = ['--dataset', dataset, '--quick', '--quiet', '--method',
                *methods, '--root', str(data_root), '--out',
                str(workdir / name)]
        assert runner(name).main(argv) == 0
        out[dataset] = workdir / name / dataset / folder
    return out


REQUIRED = ('dataset', 'backbone', 'method', 'seed', 'config', 'versions',
            'history', 'selected_epoch', 'val', 'test', 'wall_time_s',
            'device', 'metric', 'table', 'engine')


@pytest.mark.parametrize('name,dataset,methods,folder', QUICK_RUNS)
def test_quick_run_writes_one_valid_json_per_seed(quick_results, name,
                                                  dataset, methods, folder):
    path = quick_results[dataset]
    for method in methods:
        for seed in (0, 1):
            rec = json.loads((path / method / f'seed{seed}.json').read_text())
            assert all(key in rec for key in REQUIRED)
            assert (rec['dataset'], rec['method'], rec['seed']) == \
                (dataset, method, seed)
            assert rec['quick'] is True
            assert rec['versions']['torch'] == torch.__version__
            assert rec['engine'] == ENGINE_VERSION
            hist = rec['history']
            assert len(hist) == rec['epochs_run'] >= 1
            assert [h['epoch'] for h in hist] == list(
                range(1, len(hist) + 1))
            best = hist[rec['selected_epoch'] - 1]
            # The reported scores are the selected epoch's, and that epoch has
            # the best validation score.
            assert best['val'] == rec['val'] == max(h['val'] for h in hist)
            assert best['test'] == rec['test']
            assert all(math.isfinite(h['train_loss']) for h in hist)
            # No checkpoint left behind by a finished run.
            assert not (path / method / f'seed{seed}.ckpt').exists()
    rows = list(csv.DictReader(open(path / 'summary.csv')))
    tests = 2 if dataset == 'CMNIST' else 1  # CMNIST: reversed and gray
    assert len(rows) == len(methods) * tests
    assert {r['seeds'] for r in rows} == {'2'}
    md = (path / 'summary.md').read_text()
    assert md.count('\n| ') == len(methods) + 1  # header + one row each


def test_summary_scales_and_paper_numbers(quick_results):
    path = quick_results['ogbg-molbace']
    rows = {r['method']: r for r in csv.DictReader(
        open(path / 'summary.csv'))}
    seeds = [json.loads((path / 'erm' / f'seed{s}.json').read_text())
             for s in (0, 1)]
    mean = sum(r['test']['test'] for r in seeds) / 2 * 100  # ROC-AUC x100
    assert float(rows['erm']['test_mean']) == pytest.approx(mean)
    paper = load_paper()
    if paper is not None:
        assert float(rows['hma']['paper_mean']) == 77.18  # table 3, GIN, HMA
        assert 'paper' in (path / 'summary.md').read_text()


def test_resume_keeps_finished_runs(quick_results, workdir, data_root):
    path = quick_results['PROTEINS'] / 'erm' / 'seed0.json'
    before = json.loads(path.read_text())['finished_at']
    stamp = path.stat().st_mtime_ns
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'erm',
            '--root', str(data_root), '--out', str(workdir / 'ood'),
            '--resume']
    assert runner('ood').main(argv) == 0
    assert path.stat().st_mtime_ns == stamp
    assert json.loads(path.read_text())['finished_at'] == before


def test_skip_committed_leaves_out_runs_with_a_committed_row(
        quick_results, data_root, tmp_path, capsys):
    # A study continued on a fresh machine: its output folder is gone, its
    # committed runs.csv is not. Seed 0 has a row there (matched by the
    # run's fingerprint and today's engine version), seed 1 does not: only
    # seed 1 trains.
    from pyg_hma.train.results import RUNS_COLUMNS
    rec = json.loads((quick_results['PROTEINS'] / 'erm' / 'seed0.json')
                     .read_text())
    runs = tmp_path / 'runs.csv'
    with open(runs, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=RUNS_COLUMNS)
        w.writeheader()
        w.writerow({**{c: '' for c in RUNS_COLUMNS}, 'seed': 0,
                    'fingerprint': rec['run_fingerprint'],
                    'engine': ENGINE_VERSION})
        # Seed 1's row is an older engine's run: today's code trains it.
        w.writerow({**{c: '' for c in RUNS_COLUMNS}, 'seed': 1,
                    'fingerprint': json.loads(
                        (quick_results['PROTEINS'] / 'erm' / 'seed1.json')
                        .read_text())['run_fingerprint'],
                    'engine': ENGINE_VERSION - 1})
    out = tmp_path / 'fresh'
    argv = ['--dataset', 'PROTEINS', '--quick', '--method', 'erm',
            '--root', str(data_root), '--out', str(out)]
    assert runner('ood').main(argv + ['--skip-committed', str(runs)]) == 0
    err = capsys.readouterr().err
    assert f'ERM seed 0: committed in {runs}, skipped' in err
    cell = out / 'PROTEINS' / 'gin-max' / 'erm'
    assert sorted(p.name for p in cell.glob('seed*.json')) == ['seed1.json']
    # Not a runs.csv: one line, before any work.
    with pytest.raises(SystemExit) as e:
        runner('ood').main(argv + ['--skip-committed', str(tmp_path / 'no')])
    assert e.value.code == 2
    assert 'is not a file; give the committed rows' in capsys.readouterr().err
    bad = tmp_path / 'bad.csv'
    bad.write_text('a,b\n1,2\n')
    with pytest.raises(SystemExit):
        runner('ood').main(argv + ['--skip-committed', str(bad)])
    assert 'lacks the columns' in capsys.readouterr().err


def test_parallel_runs_match_sequential_runs(quick_results, workdir,
                                             data_root, tmp_path):
    # --jobs trains the seeds x methods in worker processes; every run seeds
    # itself and loads its own split, so its numbers must be the very same
    # as those of the sequential fixture run (same seeds, same settings).
    out = tmp_path / 'ood_jobs'  # not under workdir: the report test
    # counts the result files there
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'erm',
            'hma', '--root', str(data_root), '--out', str(out), '--jobs', '2']
    assert runner('ood').main(argv) == 0
    for method in ('erm', 'hma'):
        for seed in (0, 1):
            name = f'PROTEINS/gin-max/{method}/seed{seed}.json'
            seq = json.loads((workdir / 'ood' / name).read_text())
            par = json.loads((out / name).read_text())
            assert par['run_fingerprint'] == seq['run_fingerprint']
            assert [h['train_loss'] for h in par['history']] == \
                [h['train_loss'] for h in seq['history']]
            assert (par['val'], par['test']) == (seq['val'], seq['test'])

    rows = list(csv.DictReader(open(out / 'PROTEINS/gin-max/summary.csv')))
    assert [r['method'] for r in rows] == ['erm', 'hma']
    assert [r['seeds'] for r in rows] == ['2', '2']
    with pytest.raises(SystemExit):
        runner('ood').main(argv[:-1] + ['0'])


def test_momentum_flag_reaches_the_model(workdir, data_root, tmp_path):
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--seeds', '0-0', '--epochs', '1', '--root', str(data_root),
            '--out', str(tmp_path), '--momentum', 'none']
    assert runner('ood').main(argv) == 0
    rec = json.loads(
        (tmp_path / 'PROTEINS/gin-max/hma/seed0.json').read_text())
    assert rec['config']['momentum'] is None
    # Another configuration in the same folder replaces the finished run:
    # refused up front, allowed with --force (the old run moved aside).
    assert runner('ood').main(argv[:-1] + ['0.5']) == 2
    assert runner('ood').main(argv[:-1] + ['0.5', '--force']) == 0
    rec2 = json.loads(
        (tmp_path / 'PROTEINS/gin-max/hma/seed0.json').read_text())
    assert rec2['config']['momentum'] == 0.5
    assert rec2['run_fingerprint'] != rec['run_fingerprint']
    with pytest.raises(SystemExit):
        runner('ood').main(argv[:-1] + ['1.5'])


def test_report_builds_from_result_folders(quick_results, workdir, capsys):
    report = runner('report')
    # Quick runs are excluded unless asked for.
    assert report.main([str(workdir)]) == 1
    out_file = workdir / 'report.md'
    assert report.main([str(workdir), '--include-quick', '--out',
                        str(out_file)]) == 0
    text = out_file.read_text()
    assert '### Table 3' in text and '### Table 4' in text
    assert '### Table 6' in text and '### Not in the paper' in text
    records = [r for r in find_results([workdir])]
    assert len(records) == 2 * sum(len(m) for _, _, m, _ in QUICK_RUNS)
    if load_paper() is not None:
        # Table 6 lists PROTEINS' ERM at 0.19 (paper: GIN, max pooling).
        assert '0.190 ± 0.070' in text
        assert ' paper |' not in report_markdown(records, None)


def test_paper_lookup_and_seed_parsing(tmp_path):
    paper = [dict(table='6', metric='mcc', dataset='NCI1', backbone='',
                  method='V-REx', mean='0.15', std='0.04'),
             dict(table='3', metric='rocauc_x100', dataset='ogbg-molhiv',
                  backbone='GIN-v', method='HMA', mean='75.83', std='1.23')]
    assert paper_number(paper, 6, 'NCI1', 'GCN', 'V-REx') == (0.15, 0.04)
    assert paper_number(paper, 3, 'ogbg-molhiv', 'GIN-v', 'HMA') == \
        (75.83, 1.23)
    assert paper_number(paper, 3, 'ogbg-molhiv', 'GIN', 'HMA') is None
    assert parse_seeds('3') == [0, 1, 2]
    assert parse_seeds('2-4') == [2, 3, 4]
    assert parse_seeds('5,1') == [5, 1]
    with pytest.raises(Exception, match='--seeds'):
        parse_seeds('x')


def test_unknown_dataset_is_a_clear_error(workdir, capsys):
    with pytest.raises(SystemExit) as exc:
        runner('ood').main(['--dataset', 'nci1', '--quick', '--out',
                            str(workdir / 'bad')])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nci1'" in err and 'NCI1' in err
    assert not (workdir / 'bad').exists()
    for flag, name in (('--method', 'hmaa'), ('--backbone', 'gat')):
        with pytest.raises(SystemExit) as exc:
            runner('ood').main(['--dataset', 'NCI1', flag, name, '--out',
                                str(workdir / 'bad')])
        assert exc.value.code == 2
        assert f"Unknown {flag[2:]} '{name}'" in capsys.readouterr().err


def test_eval_flags_are_recorded_and_the_selected_model_saved(
        workdir, data_root, tmp_path):
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--seeds', '0-0', '--epochs', '2', '--root', str(data_root),
            '--out', str(tmp_path), '--eval', 'order', '--compare-evals',
            '--save-model']
    assert runner('ood').main(argv) == 0
    stem = tmp_path / 'PROTEINS/gin-max/hma/seed0'
    rec = json.loads(stem.with_suffix('.json').read_text())
    assert rec['eval_mode'] == rec['config']['train']['eval_mode'] == 'order'
    assert set(rec['by_eval_mode']) == {'independent', 'shuffled', 'order'}
    own = rec['by_eval_mode']['order']
    assert own['selected_epoch'] == rec['selected_epoch']
    assert own['at_run_selection'] == {'val': rec['val'], 'test': rec['test']}
    assert all('by_eval_mode' in h for h in rec['history'])
    state = torch.load(stem.with_suffix('.model.pt'), weights_only=True)
    assert 'readout.queue_keys' in state and 'readout.slots' in state
    # The default is batch-independent evaluation, and it is a different run.
    assert runner('ood').main(argv[:-4] + ['--force']) == 0
    rec2 = json.loads(stem.with_suffix('.json').read_text())
    assert rec2['eval_mode'] == 'independent' and rec2['by_eval_mode'] is None
    assert rec2['run_fingerprint'] != rec['run_fingerprint']
    with pytest.raises(SystemExit):
        runner('ood').main(argv[:-4] + ['--eval', 'random'])


def test_hyperparameter_options_reach_the_run(workdir, data_root, tmp_path):
    from pyg_hma.runners.cli import parse_setting
    assert parse_setting('hma.memory_size=512') == ('hma', 'memory_size', 512)
    assert parse_setting('train.weight_decay=1e-4') == \
        ('train', 'weight_decay', 1e-4)
    assert parse_setting('backbone.pooling=max') == \
        ('backbone', 'pooling', 'max')
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--seeds', '0-0', '--epochs', '1', '--root', str(data_root),
            '--out', str(tmp_path), '--memory-size', '48', '--set',
            'hma.heads=2', '--dropout', '0.1', '--set',
            'method.penalty_weight=50', '--set',
            'train.weight_decay=0.001', '--lr', '0.01']
    assert runner('ood').main(argv) == 0
    config = json.loads((tmp_path / 'PROTEINS/gin-max/hma/seed0.json')
                        .read_text())['config']
    assert (config['hma']['memory_size'], config['hma']['heads']) == (48, 2)
    assert config['hma']['slots_per_class'] == 32  # the protocol's
    assert config['backbone_kwargs']['dropout'] == 0.1
    assert (config['train']['weight_decay'], config['train']['lr']) == \
        (0.001, 0.01)
    # A method hyperparameter is recorded where TrainConfig held it.
    assert config['train']['penalty_weight'] == 50
    assert config['train']['drop_ratio'] == 0.2  # the default
    for bad in (['--set', 'hma.rma=false'], ['--set', 'train.nope=1'],
                ['--set', 'backbone.conv=gcn'], ['--set', 'x=1'],
                ['--set', 'method.nope=1'],
                ['--set', 'train.penalty_weight=2']):
        with pytest.raises(SystemExit) as exc:
            runner('ood').main(argv[:-6] + bad)
        assert exc.value.code == 2


def read_seed(out, seed, method='hma'):
    return json.loads((out / f'PROTEINS/gin-max/{method}/seed{seed}.json')
                      .read_text())


def assert_same_runs(a, b):
    assert a['run_fingerprint'] == b['run_fingerprint']
    assert [dict(h, time_s=0) for h in a['history']] == \
        [dict(h, time_s=0) for h in b['history']]
    assert a['test'] == b['test'] and a['val'] == b['val']


def test_how_a_seed_runs_never_changes_its_result(data_root, tmp_path):
    # Seed 1 alone (--seed-batch 1), in the default group of three, in a
    # group of two under --jobs 2, and with --compare-evals: one run, to
    # the last bit, under one fingerprint (float32, dropout on).
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--epochs', '2', '--root', str(data_root)]
    ways = {'alone': ['--seeds', '1-1', '--seed-batch', '1'],
            'group': ['--seeds', '0-2'],
            'jobs': ['--seeds', '0-3', '--jobs', '2'],
            'compare': ['--seeds', '1-1', '--compare-evals']}
    for name, extra in ways.items():
        assert runner('ood').main(argv + extra + [
            '--out', str(tmp_path / name)]) == 0
    runs = {name: read_seed(tmp_path / name, 1) for name in ways}
    assert runs['alone']['seed_batch'] == 1
    assert runs['group']['seed_batch'] == 3
    for name in ('group', 'jobs'):
        assert_same_runs(runs['alone'], runs[name])
    compared = runs['compare']
    assert 'by_eval_mode' in compared['history'][0]
    assert [h['train_loss'] for h in compared['history']] == \
        [h['train_loss'] for h in runs['alone']['history']]
    assert compared['test'] == runs['alone']['test']


@pytest.mark.parametrize('extra,expected', [
    ([], (10, False)), (['--seed-batch', '3'], (3, True)),
    (['--seed-batch', '1'], (1, True)), (['--pad', '64,128'], (10, False)),
    (['--compile', 'default'], (10, False))])
def test_default_seed_batch(extra, expected, capsys, tmp_path):
    from pyg_hma.runners import RunSpec, build_parser
    from pyg_hma.runners.plan import Printer, plan
    protocols = runner('ood').PROTOCOLS
    args = build_parser('ood', protocols).parse_args(
        ['--dataset', 'NCI1', '--method', 'erm', '--seeds', '0-0'] + extra)
    spec = RunSpec.from_args(args)
    assert (spec.seed_batch, spec.seed_batch_given) == expected
    plan(spec, 'ood', protocols, tmp_path, torch.device('cpu'),
         Printer(quiet=False))
    assert 'trains one run at a time' not in capsys.readouterr().err


def test_padded_runs_are_seed_batched(data_root, tmp_path):
    # --pad (static shapes) trains the seeds of a cell as one model too,
    # and the runs record the padding in their configuration.
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--seeds', '0,1', '--epochs', '2', '--root', str(data_root),
            '--pad', '256,1024', '--out', str(tmp_path)]
    assert runner('ood').main(argv) == 0
    recs = [json.loads((tmp_path / f'PROTEINS/gin-max/hma/seed{s}.json')
                       .read_text()) for s in (0, 1)]
    assert [r['seed_batch'] for r in recs] == [2, 2]
    assert [r['config']['pad'] for r in recs] == [[256, 1024]] * 2


def test_no_checkpoints_trains_the_same_runs(data_root, tmp_path):
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--seeds', '0,1', '--epochs', '2', '--root', str(data_root),
            '--seed-batch', '2', '--keep-checkpoints']
    folder = 'PROTEINS/gin-max/hma'
    assert runner('ood').main(argv + ['--out', str(tmp_path / 'a')]) == 0
    assert runner('ood').main(argv + ['--out', str(tmp_path / 'b'),
                                      '--no-checkpoints']) == 0
    assert len(list((tmp_path / 'a' / folder).glob('*.ckpt'))) == 2
    assert not list((tmp_path / 'b' / folder).glob('*.ckpt'))
    for seed in (0, 1):
        a, b = (json.loads((tmp_path / x / folder / f'seed{seed}.json')
                           .read_text()) for x in 'ab')
        assert a['run_fingerprint'] == b['run_fingerprint']
        assert [h['val'] for h in a['history']] == \
            [h['val'] for h in b['history']]


def test_interrupted_seed_group_resumes_from_the_runner(data_root, tmp_path,
                                                        monkeypatch):
    # The runner's conflict check must accept the checkpoints a seed group
    # writes (their fingerprint names the seed-batched streams).
    from pyg_hma.train import engine
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--seeds', '0,1', '--epochs', '3', '--patience', '0',
            '--root', str(data_root), '--out', str(tmp_path / 'full'),
            '--seed-batch', '2']
    assert runner('ood').main(argv) == 0
    save, saves = engine.Checkpointer.save, []

    def interrupted(self, state):
        saves.append(state['epoch'])
        if len(saves) > 3:  # seed 0 saved epoch 2, seed 1 not yet
            raise KeyboardInterrupt
        save(self, state)
    monkeypatch.setattr(engine.Checkpointer, 'save', interrupted)
    cut = argv[:-4] + ['--out', str(tmp_path / 'cut'), '--seed-batch', '2']
    with pytest.raises(KeyboardInterrupt):
        runner('ood').main(cut)
    folder = tmp_path / 'cut/PROTEINS/gin-max/hma'
    assert sorted(p.name for p in folder.glob('*.ckpt')) == \
        ['seed0.ckpt', 'seed1.ckpt']
    monkeypatch.setattr(engine.Checkpointer, 'save', save)
    assert runner('ood').main(cut + ['--resume']) == 0
    for seed in (0, 1):
        full = json.loads((tmp_path / f'full/PROTEINS/gin-max/hma/'
                           f'seed{seed}.json').read_text())
        resumed = json.loads((folder / f'seed{seed}.json').read_text())
        # seed 0 continued at epoch 3, seed 1 caught up from epoch 2 alone
        assert resumed['resumed_from_epoch'] == 3 - seed
        assert_same_runs(full, resumed)


def test_tensorboard_curves_follow_the_recorded_history(data_root, tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'hma',
            '--seeds', '0,1', '--epochs', '3', '--root', str(data_root),
            '--compare-evals', '--tensorboard', str(tmp_path / 'tb')]
    for extra in ([], ['--seed-batch', '2']):  # one by one, seed-batched
        out = tmp_path / f'out{len(extra)}'
        assert runner('ood').main(argv + ['--out', str(out)] + extra) == 0
        for seed in (0, 1):
            rec = json.loads((out / f'PROTEINS/gin-max/hma/seed{seed}.json')
                             .read_text())
            events = EventAccumulator(str(
                tmp_path / f'tb/PROTEINS/gin-max/hma/seed{seed}')).Reload()
            val = [e.value for e in events.Scalars('metric/val')]
            assert val == pytest.approx([h['val'] for h in rec['history']])
            loss = [e.value for e in events.Scalars('loss/train')]
            assert loss == pytest.approx(
                [h['train_loss'] for h in rec['history']])
            assert 'metric_by_eval/order/test' in events.Tags()['scalars']
        shutil.rmtree(tmp_path / 'tb')


def test_table3_gpu_archive_carries_results_only(tmp_path):
    # benchmarks/table3_gpu.py: what travels back from the GPU is every
    # finished run's JSON and log, never checkpoints or hidden folders.
    table3 = runner('table3_gpu')
    work = tmp_path / 'work'
    cell = work / 'ogbg-molbace' / 'gin' / 'erm'
    cell.mkdir(parents=True)
    for name in ('seed0.json', 'seed0.log', 'seed1.ckpt', 'summary.md'):
        (cell / name).write_text(name)
    (work / '.superseded').mkdir()
    (work / '.superseded' / 'seed2.json').write_text('old')
    assert table3.pack(work, tmp_path / 'out' / 'r.tar.gz') == 1
    assert table3.unpack(tmp_path / 'out' / 'r.tar.gz', tmp_path / 'back') == 2
    back = tmp_path / 'back' / 'ogbg-molbace' / 'gin' / 'erm'
    assert sorted(p.name for p in back.iterdir()) == ['seed0.json',
                                                      'seed0.log']
    assert (back / 'seed0.json').read_text() == 'seed0.json'
    assert table3.prior_seconds('ogbg-molbace', 'gin', 'erm') < \
        table3.prior_seconds('ogbg-molbbbp', 'gin-v', 'hma')


def test_default_groups_give_every_worker_a_unit():
    from types import SimpleNamespace
    from pyg_hma.runners.execute import units
    jobs = [SimpleNamespace(method=m, seed=s) for m in ('erm', 'hma')
            for s in range(10)]

    def sizes(work):
        return [(u[0].method, len(u)) for u in work]
    # Alone: one group per method; --seed-batch N given: N, whatever --jobs.
    assert sizes(units(jobs, 10)) == [('erm', 10), ('hma', 10)]
    assert sizes(units(jobs, 4)) == [('erm', 4), ('erm', 4), ('erm', 2),
                                     ('hma', 4), ('hma', 4), ('hma', 2)]
    # The default size with --jobs: smaller groups so every worker has one.
    assert sizes(units(jobs, 10, workers=2)) == [('erm', 10), ('hma', 10)]
    assert sizes(units(jobs, 10, workers=4)) == [('erm', 5), ('erm', 5),
                                                 ('hma', 5), ('hma', 5)]
    assert sizes(units(jobs[:10], 10, workers=3)) == [('erm', 4), ('erm', 4),
                                                      ('erm', 2)]
    assert sizes(units(jobs, 1, workers=4)) == [(j.method, 1) for j in jobs]
    assert units([], 10, workers=4) == []  # every run finished earlier
    # Every job exactly once, in seed order within its method.
    flat = [j for u in units(jobs, 10, workers=7) for j in u]
    assert flat == jobs


def test_resume_says_when_a_kept_run_is_of_another_engine(
        quick_results, data_root, tmp_path, capsys):
    import shutil
    out = tmp_path / 'ood'
    cell = out / 'PROTEINS' / quick_results['PROTEINS'].name
    shutil.copytree(quick_results['PROTEINS'], cell)
    path = cell / 'erm' / 'seed0.json'
    rec = json.loads(path.read_text())
    path.write_text(json.dumps(dict(rec, engine=ENGINE_VERSION - 1)))
    argv = ['--dataset', 'PROTEINS', '--quick', '--method', 'erm',
            '--root', str(data_root), '--out', str(out), '--resume']
    assert runner('ood').main(argv) == 0
    err = capsys.readouterr().err
    assert (f'ERM seed 0: finished earlier, kept (engine version '
            f'{ENGINE_VERSION - 1}; today\'s is {ENGINE_VERSION})') in err
    assert 'ERM seed 1: finished earlier, kept\n' in err
