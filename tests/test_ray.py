"""Runs of the runners as tasks on a real local Ray cluster (``--ray``): the
same numbers as the sequential runner, a killed task retried, a failed one
reported by name, ``--resume`` after the driver was stopped, and the
one-line error without Ray. The cluster tests carry the ``ray`` marker
(``pytest -m 'not ray'`` leaves them out)."""
import builtins
import dataclasses
import csv
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import runner_module
from pyg_hma.data import find_mirror
from pyg_hma.runners import execute
from pyg_hma.runners.cli import build_parser
from pyg_hma.runners.ray_backend import RAY_MISSING
from pyg_hma.runners.spec import ArgumentError, RunSpec, check_paths
from pyg_hma.study import sweep

ROOT = Path(__file__).resolve().parents[1]
GRID = 'PROTEINS/gin-max'
RUNS = [f'{method}/seed{seed}' for method in ('erm', 'hma')
        for seed in (0, 1)]


def ood(argv):
    return runner_module('ood').main(argv)


@pytest.fixture(scope='module')
def cluster():
    ray = pytest.importorskip('ray')
    if find_mirror() is None:
        pytest.skip('needs the offline data mirror (../shared/data)')
    import logging
    ray.init(num_cpus=2, logging_level=logging.WARNING, log_to_driver=False)
    # The fault-injecting wrappers below travel to the workers by value
    # (the workers cannot import this test module).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope='module')
def quick_argv(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / 'pyg_hma_data'  # shared
    return ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method', 'erm',
            'hma', '--root', str(root)]  # --quick: seeds 0 and 1


@pytest.fixture(scope='module')
def sequential(cluster, quick_argv, tmp_path_factory):
    out = tmp_path_factory.mktemp('sequential')
    assert ood(quick_argv + ['--out', str(out)]) == 0
    return out


def _die_once_mid_run(marker, run_group, unit):
    r"""Runs :obj:`unit`; the first task to claim :obj:`marker` kills its
    worker process (``os._exit``) once the run has checkpointed an epoch."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return run_group(unit)
    os.write(fd, '/'.join(unit[0].stem.parts[-2:]).encode())
    os.close(fd)
    checkpoint = unit[0].stem.with_suffix('.ckpt')

    def die_after_the_first_epoch():
        while not checkpoint.exists():
            time.sleep(0.02)
        os._exit(1)
    threading.Thread(target=die_after_the_first_epoch, daemon=True).start()
    return run_group(unit)


@pytest.fixture(scope='module')
def on_ray(cluster, quick_argv, tmp_path_factory):
    r"""The quick grid on Ray, with one task's worker killed mid-run."""
    out = tmp_path_factory.mktemp('on_ray')
    marker = out.parent / f'{out.name}.killed'
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(execute, 'run_group', functools.partial(
            _die_once_mid_run, str(marker), execute.run_group))
        assert ood(quick_argv + ['--out', str(out), '--ray']) == 0
    return out, marker.read_text()


def _same_runs(a: Path, b: Path, runs=RUNS):
    for run in runs:
        x, y = (json.loads((folder / GRID / f'{run}.json').read_text())
                for folder in (a, b))
        assert x['run_fingerprint'] == y['run_fingerprint']
        assert [h['train_loss'] for h in x['history']] == \
            [h['train_loss'] for h in y['history']]
        assert (x['val'], x['test']) == (y['val'], y['test'])
        assert set(x) == set(y)  # the same record


@pytest.mark.ray
def test_runs_on_ray_match_the_sequential_runs(sequential, on_ray):
    out, _ = on_ray
    _same_runs(sequential, out)

    def summary(folder):  # all but the wall time
        rows = list(csv.DictReader(open(folder / GRID / 'summary.csv')))
        return [{k: v for k, v in row.items() if k != 'wall_time_s_mean'}
                for row in rows]
    assert summary(out) == summary(sequential)


@pytest.mark.ray
def test_a_killed_task_is_retried_and_the_run_completes(on_ray):
    out, killed = on_ray
    assert killed in RUNS
    # The killed attempt's log, then the retry's.
    assert (out / GRID / f'{killed}.log').exists()
    assert (out / GRID / f'{killed}.attempt2.log').exists()
    assert not list((out / GRID).glob('*/*.ckpt'))  # all finished


def _fail_for_seed(seed, run_group, unit):
    if unit[0].seed == seed:
        raise RuntimeError(f'planted failure of seed {seed}')
    return run_group(unit)


@pytest.mark.ray
def test_failed_runs_are_reported_by_name_after_the_others_end(
        on_ray, quick_argv, tmp_path, monkeypatch, capsys):
    import shutil
    out = tmp_path / 'out'
    shutil.copytree(on_ray[0], out)
    stamps = {r: (out / GRID / f'{r}.json').stat().st_mtime_ns for r in RUNS}
    monkeypatch.setattr(execute, 'run_group', functools.partial(
        _fail_for_seed, 2, execute.run_group))
    argv = quick_argv + ['--seeds', '0-2', '--out', str(out), '--resume',
                         '--ray']
    assert ood(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith('ood.py: error: 2 of 2 runs failed on Ray after a '
                          'retry: PROTEINS/gin-max/erm/seed2 (RuntimeError: '
                          'planted failure of seed 2); PROTEINS/gin-max/hma/'
                          'seed2')
    assert 'run again with --resume' in err
    assert stamps == {r: (out / GRID / f'{r}.json').stat().st_mtime_ns
                      for r in RUNS}


@pytest.mark.ray
def test_resume_after_stopping_the_driver_keeps_the_finished_runs(
        cluster, quick_argv, tmp_path):
    out = tmp_path / 'out'
    address = cluster.get_runtime_context().gcs_address
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
        OMP_NUM_THREADS='1')
    # One run per unit (--seed-batch 1), and each task asks for both of the
    # cluster's CPUs, so the four runs train one after the other: when the
    # first has written its JSON, three are left, several seconds of work,
    # while the stopped driver cancels them within a second. (With the
    # quick grid's two seed groups, even one at a time, the second group
    # sometimes landed before the driver stopped on an idle CI machine,
    # leaving --resume nothing to do.)
    argv = quick_argv + ['--seed-batch', '1']
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / 'benchmarks/ood.py'), *argv,
         '--out', str(out), '--ray', address, '--ray-cpus-per-run', '2'],
        cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # Ctrl-C must reach the driver even when these tests run in the
        # background (a shell's `&` makes SIGINT ignored, and the child
        # would inherit that).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Only a guard against a hang: on a busy 2-core machine the cluster's
    # workers can take minutes to import torch and PyG.
    deadline = time.monotonic() + 900
    while not list(out.glob(f'{GRID}/*/*.json')):
        assert driver.poll() is None, driver.stderr.read()
        assert time.monotonic() < deadline, 'no run finished in 900 s'
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)  # Ctrl-C: the driver stops
    assert driver.wait(timeout=120) != 0
    finished = {p: (p.stat().st_mtime_ns, p.read_text())
                for p in out.glob(f'{GRID}/*/*.json')}
    assert 1 <= len(finished) < len(RUNS)

    assert ood(argv + ['--out', str(out), '--ray', '--resume']) == 0
    assert finished == {p: (p.stat().st_mtime_ns, p.read_text())
                        for p in finished}
    alone = tmp_path / 'alone'  # the same runs, uninterrupted, without Ray
    assert ood(argv + ['--out', str(alone)]) == 0
    _same_runs(alone, out)


def test_ray_missing_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == 'ray' or name.startswith('ray.'):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_ray)
    with pytest.raises(SystemExit) as stop:
        ood(['--dataset', 'PROTEINS', '--quick', '--out',
             str(tmp_path / 'out'), '--ray'])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f'ood.py: error: {RAY_MISSING}'
    assert not (tmp_path / 'out').exists()  # before any work
    monkeypatch.chdir(ROOT)  # the sweep finds the runners there
    assert sweep.main(['--runner', 'ood', '--dataset', 'PROTEINS',
                       '--method', 'erm', '--quick', '--out',
                       str(tmp_path / 'sweep'), '--ray']) == 2
    assert capsys.readouterr().err.strip() == f'sweep.py: error: {RAY_MISSING}'
    assert not (tmp_path / 'sweep').exists()


@pytest.mark.parametrize('options,problem', [
    (['--ray-gpus-per-run', '1'], '--ray-gpus-per-run needs --ray'),
    (['--ray', '--jobs', '2'], '--jobs does not combine with --ray'),
    (['--ray', '--ray-cpus-per-run', '0'], '--ray-cpus-per-run must be '
     'positive'),
    (['--ray', '--ray-gpus-per-run', '1.5'], '--ray-gpus-per-run must be a '
     'fraction of one GPU'),
    (['--ray', '--device', 'cuda'], '--device cuda with --ray needs '
     '--ray-gpus-per-run'),
    (['--ray', '--device', 'cpu', '--ray-gpus-per-run', '0.5'],
     '--device cpu does not combine with --ray-gpus-per-run'),
    (['--ray', '--ddp'], '--ddp does not combine with --ray'),
])
def test_ray_options_are_checked_before_any_work(options, problem, tmp_path):
    parser = build_parser('ood', {'PROTEINS': None})
    args = parser.parse_args(['--dataset', 'PROTEINS', '--out',
                              str(tmp_path), *options])
    with pytest.raises(ArgumentError) as error:
        RunSpec.from_args(args)
    assert str(error.value).startswith(problem)


def test_on_ray_the_device_is_the_workers(tmp_path):
    # --device cuda is refused on a machine without CUDA, not on Ray: the
    # runs train where Ray puts them.
    parser = build_parser('ood', {'PROTEINS': None})
    spec = RunSpec.from_args(parser.parse_args([
        '--dataset', 'PROTEINS', '--out', str(tmp_path), '--device', 'cuda',
        '--ray', 'HEAD:6379', '--ray-gpus-per-run', '0.25']))
    assert (spec.ray, spec.ray_gpus_per_run) == ('HEAD:6379', 0.25)
    check_paths(spec, 'ood')


def test_a_sweep_passes_its_ray_options_to_every_run(monkeypatch, tmp_path):
    pytest.importorskip('ray')
    monkeypatch.chdir(ROOT)  # the sweep finds the runners there
    base = ['--runner', 'ood', '--dataset', 'PROTEINS', '--method', 'erm',
            '--quick', '--param', 'lr=1e-2,1e-3', '--out', str(tmp_path)]
    local = sweep.sweep_from_args(base)
    on_ray = sweep.sweep_from_args(base + ['--ray', 'HEAD:6379',
                                           '--ray-gpus-per-run', '0.25'])
    # Where the runs train is not what the sweep is: either continues the
    # other's study.
    assert on_ray.identity() == local.identity()
    params, seeds = on_ray.points[0], on_ray.search_seeds
    assert on_ray.run_spec(params, seeds, tmp_path) == dataclasses.replace(
        local.run_spec(params, seeds, tmp_path), ray='HEAD:6379',
        ray_gpus_per_run=0.25)
    assert on_ray.reproduce_command(params, seeds) == \
        local.reproduce_command(params, seeds)
    with pytest.raises(sweep.SweepError, match='give --ray to the sweep'):
        sweep.sweep_from_args(base + ['--', '--ray'])
    with pytest.raises(sweep.SweepError, match='--ray-cpus-per-run needs '
                       '--ray'):
        sweep.sweep_from_args(base + ['--ray-cpus-per-run', '2'])
    with pytest.raises(sweep.SweepError, match='--jobs does not combine'):
        sweep.sweep_from_args(base + ['--ray', '--', '--jobs', '2'])
