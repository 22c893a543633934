"""benchmarks/speed.py, run as users run it (a script, in a subprocess):
its report, its --out folder, partial results of a stopped run and the
seed-batch mode. What it relies on is tested with the library: the loaders
(test_device_loader.py), padding and compilation (test_padding.py), the
export (test_exported.py) and seed batching (test_seed_batch.py)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ['--synthetic', '--dataset', 'NCI1', '--threads', '1']


def speed(*argv, **kwargs):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, str(ROOT / 'benchmarks' /
                                               'speed.py'), *argv],
                          env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_quick_report_in_an_out_folder(tmp_path):
    run = speed('--quick', *SMALL, '--methods', 'erm', 'hma', '--out',
                str(tmp_path))
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / 'speed-NCI1-gcn.json').read_text())
    assert report['dataset'] == 'NCI1'
    assert report['environment']['torch_threads'] == 1
    # The protocol is the runner's (benchmarks/ood.py): CIGA's GCN.
    assert report['backbone_kwargs']['hidden_channels'] == 32
    assert report['train']['clip_grad_norm'] == 1.0
    for path in ('pyg', 'fast'):
        erm, hma = (report['results'][path][m] for m in ('erm', 'hma'))
        assert hma['step_ratio'] == pytest.approx(hma['step_ms'] /
                                                  erm['step_ms'])
        assert hma['epoch_ratio'] == pytest.approx(hma['epoch_s'] /
                                                   erm['epoch_s'])
        assert set(hma['eval_graphs_per_s']) == {'batch', 'independent'}
        assert set(erm['eval_graphs_per_s']) == {'batch'}
    assert 'fast/hma' in run.stdout  # the table and the step line
    # The sgemm floor beside the ERM step: the GEMMs of GCN's linear layers
    # (forward, backward twice) at the rate measured on their shapes.
    floor = report['gemm_floor']
    assert floor['threads'] == 1 and floor['floor_ms'] > 0
    shapes = [s['shape'] for s in floor['shapes']]
    assert [32, 32] in [s[1:] for s in shapes]  # hidden x hidden
    assert floor['gflop_per_step'] == pytest.approx(sum(
        3 * 2 * m * k * n * s['per_step'] / 1e9
        for s in floor['shapes'] for m, k, n in [s['shape']]))
    assert 'sgemm floor of the ERM step' in run.stdout


def test_bad_arguments_are_refused_before_running(tmp_path):
    a_file = tmp_path / 'notes'
    a_file.write_text('keep')
    for bad in (['--out', str(a_file)], ['--threads', '-1'],
                ['--seed-batch', '2', '--paths', 'fast', 'static'],
                ['--methods', 'nope']):
        run = speed('--quick', *SMALL, *bad)
        assert run.returncode == 2, (bad, run.stderr)
        # One line, no usage dump before it.
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert a_file.read_text() == 'keep'


def test_stopped_run_writes_what_it_measured(tmp_path):
    out = tmp_path / 'partial.json'
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / 'benchmarks' / 'speed.py'), *SMALL,
         '--max-graphs', '32', '--batch-size', '8', '--methods', 'erm',
         '--paths', 'fast', '--warmup', '0', '--steps', '100000', '--out',
         str(out)], env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith('timing'):
            break
    proc.send_signal(signal.SIGTERM)  # as `timeout` stops it
    proc.communicate(timeout=120)
    assert proc.returncode == 1
    report = json.loads(out.read_text())
    assert report['stopped'] == 'SIGTERM'
    assert 'erm' in report['results']['fast']


def test_seed_batch_mode_reports_throughput_ratios(tmp_path):
    run = speed('--quick', *SMALL, '--seed-batch', '2', '--out',
                str(tmp_path))
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / 'seed_batch-NCI1-gcn.json').read_text())
    ratios = report['seed_batch']['throughput_ratio']
    assert set(ratios) == {'erm', 'hma'}
    for method in ratios:
        assert set(ratios[method]) == {'1', '2'}  # S = 1 and 2
        assert all(r > 0 for r in ratios[method].values())
    assert 'ms/model-step' in run.stdout


@pytest.mark.parametrize('dataset,backbone', [('CMNIST', 'mlp'),
                                              ('CMNIST-28', 'cnn')])
def test_seed_batch_mode_on_images(tmp_path, dataset, backbone):
    # Colored MNIST's nets (synthetic images with environments): the image
    # unions of seed batching, and the runner's model for image inputs.
    run = speed('--quick', '--synthetic', '--dataset', dataset,
                '--backbone', backbone, '--threads', '1', '--seed-batch', '2',
                '--methods', 'erm', '--out', str(tmp_path))
    assert run.returncode == 0, run.stderr
    report = json.loads(
        (tmp_path / f'seed_batch-{dataset}-{backbone}.json').read_text())
    assert set(report['seed_batch']['throughput_ratio']['erm']) == {'1', '2'}
