import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyg_hma import HMAReadout

D, C, M = 6, 3, 8


def _rank_rows(rank, n):
    # Distinct, recognisable rows per rank: every entry equals rank + 1.
    keys = torch.full((n, D), float(rank + 1))
    keys[:, 0] = torch.arange(n, dtype=torch.float)
    labels = torch.full((n, ), rank, dtype=torch.long)
    return keys, labels


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world)
    torch.manual_seed(0)
    readout = HMAReadout(D, C, memory_size=M, slots_per_class=2, label_dim=2,
                         heads=2, dropout=0.0)
    # Rank 0 writes 3 rows, rank 1 writes 2 (a partial last batch).
    n = 3 if rank == 0 else 2
    keys, labels = _rank_rows(rank, n)
    readout(torch.randn(n, D), y=labels, key=keys)
    torch.save({k: v for k, v in readout.state_dict().items()
                if k.startswith('queue')},
               os.path.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason='no torch.distributed')
def test_ddp_queue_write_is_identical_on_all_ranks(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)),
             nprocs=2, join=True)
    q0 = torch.load(tmp_path / 'rank0.pt')
    q1 = torch.load(tmp_path / 'rank1.pt')
    for key in q0:
        assert torch.equal(q0[key], q1[key]), key
    # Both ranks' rows, in rank order, at positions 0..4.
    k0, l0 = _rank_rows(0, 3)
    k1, l1 = _rank_rows(1, 2)
    assert torch.equal(q0['queue_keys'][:5], torch.cat([k0, k1]))
    assert torch.equal(q0['queue_labels'][:5], torch.cat([l0, l1]))
    assert (q0['queue_labels'][5:] == -1).all()
    assert int(q0['queue_ptr']) == 5


# --------------------------------------------------------------------------
# fit(..., ddp=True): 2 gloo ranks started as torchrun starts them
# --------------------------------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

WORKER = Path(__file__).parent / 'ddp_worker.py'
LAUNCH_TIMEOUT_S = 400  # two contended CPU cores: ~1 min per launch


def _torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    r"""Runs tests/ddp_worker.py on 2 ranks with torchrun (``--standalone``:
    a free port on this machine); never waits longer than the timeout."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    return subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone',
         '--nproc-per-node', '2', str(WORKER), '--out', str(out), *args],
        capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=env)


def _read(out: Path, name: str):
    return json.loads((out / name).read_text())


def _state(out: Path, method: str, epoch: int, rank: int) -> dict:
    return torch.load(out / f'{method}_state_epoch{epoch}_rank{rank}.pt')


@pytest.fixture(scope='module')
def two_ranks(tmp_path_factory):
    r"""ERM and HMA trained on 2 ranks, and in one process."""
    out = tmp_path_factory.mktemp('ddp')
    done = _torchrun(out)
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path_factory.mktemp('one_process')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in ('erm', 'hma'):
            ddp_worker.train(method, one, ddp=False)
    finally:
        torch.set_num_threads(threads)
    return out, one


def _global_steps(out: Path, method: str) -> list:
    # Each rank's mean loss over its slice -> the global batch's mean loss.
    ranks = [_read(out, f'{method}_steps_rank{r}.json') for r in (0, 1)]
    return [(sum(loss * n for loss, n in step) / sum(n for _, n in step),
             sum(n for _, n in step)) for step in zip(*ranks)]


@pytest.mark.skipif(not dist.is_available(), reason='no torch.distributed')
@pytest.mark.parametrize('method', ['erm', 'hma'])
def test_two_ranks_train_like_one_process(two_ranks, method):
    out, one = two_ranks
    ref = _read(one, f'{method}_result_rank0.json')
    # The comparison holds to float noise only while no ReLU input comes
    # near 0 (ddp_worker.train): a data set that breaks this fails here,
    # not as an unexplained drift below.
    assert ref['relu_margin'] > 1e-5, ref['relu_margin']
    alone = _read(one, f'{method}_steps_rank0.json')
    ranked = _global_steps(out, method)
    # 36 graphs in batches of 7: 5 steps per epoch (the last graph skipped);
    # the uneven global batches (7 = 4 + 3) are weighted by their slices.
    assert len(alone) == len(ranked) == 15
    assert [n for _, n in alone] == [n for _, n in ranked]
    # Every step of the 3 epochs; for HMA with global ABD and a queue
    # (16 rows, 7 written per step) that wraps every 2-3 steps.
    for (a, _), (b, _) in zip(alone, ranked):
        assert b == pytest.approx(a, rel=1e-5)
    got = _read(out, f'{method}_result_rank0.json')
    assert got['skipped'] == ref['skipped'] == 3
    assert [h['val'] for h in got['history']] == pytest.approx(
        [h['val'] for h in ref['history']], abs=1e-6)
    for key, value in _state(one, method, 3, 0).items():
        torch.testing.assert_close(_state(out, method, 3, 0)[key], value,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not dist.is_available(), reason='no torch.distributed')
@pytest.mark.parametrize('method', ['erm', 'hma'])
def test_ranks_hold_identical_state_after_every_epoch(two_ranks, method):
    out, _ = two_ranks
    for epoch in (1, 2, 3):
        s0, s1 = (_state(out, method, epoch, r) for r in (0, 1))
        assert s0.keys() == s1.keys()
        for key in s0:  # parameters, BatchNorm statistics, queue, pointer
            assert torch.equal(s0[key], s1[key]), (epoch, key)
    if method == 'hma':
        assert int(s0['readout.queue_ptr']) != 0  # the queue was written
    # Every rank took the same decisions and returns the same result.
    assert _read(out, f'{method}_result_rank0.json') == \
        _read(out, f'{method}_result_rank1.json')


@pytest.mark.skipif(not dist.is_available(), reason='no torch.distributed')
def test_killed_rank_fails_the_job_and_resume_ends_the_same(two_ranks,
                                                            tmp_path):
    out, _ = two_ranks
    killed = _torchrun(tmp_path, '--method', 'hma', '--kill-rank', '1',
                       '--kill-at-epoch', '2')
    assert killed.returncode != 0
    # torchrun names the rank that died and how.
    assert 'rank        : 1' in killed.stderr or 'rank: 1' in killed.stderr, \
        killed.stderr[-3000:]
    assert 'SIGKILL' in killed.stderr or 'Signal 9' in killed.stderr
    assert not (tmp_path / 'hma_result_rank0.json').exists()
    assert (tmp_path / 'hma.ckpt').exists()  # rank 0's, after epoch 1 or 2
    resumed = _torchrun(tmp_path, '--method', 'hma', '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = _read(tmp_path, 'hma_result_rank0.json')
    ref = _read(out, 'hma_result_rank0.json')
    assert got['resumed_from'] in (2, 3)
    for key in ('val', 'test', 'selected_epoch', 'skipped', 'history'):
        assert got[key] == ref[key], key
    for key, value in _state(out, 'hma', 3, 0).items():
        assert torch.equal(_state(tmp_path, 'hma', 3, 0)[key], value), key


def _rank_loader(dataset, rank, world, split_batches, generator=None):
    from types import SimpleNamespace
    from pyg_hma.train.distributed import RankLoader, _pyg_collate
    run = SimpleNamespace(rank=rank, world_size=world)
    return RankLoader(dataset, 7, generator is not None, generator,
                      _pyg_collate, run, split_batches)


def test_rank_slices_make_up_the_one_process_batches():
    from torch_geometric.loader import DataLoader
    dataset = ddp_worker.synthetic_splits().train  # 36 graphs
    alone = list(DataLoader(dataset, batch_size=7, shuffle=True,
                            generator=torch.Generator().manual_seed(3)))
    for world in (2, 3):
        loaders = [_rank_loader(dataset, r, world, True,
                                torch.Generator().manual_seed(3))
                   for r in range(world)]
        ranked = list(zip(*[list(loader) for loader in loaders]))
        # The last global batch (one graph) has fewer graphs than ranks.
        assert len(ranked) == len(alone) - 1
        assert all(loader.skipped == 1 for loader in loaders)
        for whole, parts in zip(alone, ranked):
            assert torch.equal(whole.x, torch.cat([p.x for p in parts]))
            assert [p.num_graphs for p in parts] == [
                len(t) for t in torch.tensor_split(torch.arange(7), world)]


def test_eval_batches_are_dealt_whole_and_round_robin():
    dataset = ddp_worker.synthetic_splits().val  # 17 graphs: 7 + 7 + 3
    loaders = [_rank_loader(dataset, r, 2, False) for r in (0, 1)]
    sizes = [[b.num_graphs for b in loader] for loader in loaders]
    assert sizes == [[7, 3], [7]]
    assert loaders[0].positions.tolist() == list(range(7)) + [14, 15, 16]
    assert loaders[1].positions.tolist() == list(range(7, 14))


@pytest.mark.parametrize('extra,message', [
    (['--jobs', '2'], '--jobs'), (['--seed-batch', '2'], '--seed-batch'),
    (['--pad', '64,128'], '--pad'), (['--method', 'irm'], 'irm')])
def test_runner_refuses_what_ddp_does_not_support(monkeypatch, capsys,
                                                  tmp_path, extra, message):
    from pyg_hma.runners.cli import main
    from pyg_hma.train.distributed import TORCHRUN_ENV
    for name in TORCHRUN_ENV:  # as if started by torchrun
        monkeypatch.setenv(name, '0' if name != 'MASTER_ADDR' else 'x')
    with pytest.raises(SystemExit):
        main(['--dataset', 'PROTEINS', '--ddp', '--out', str(tmp_path)]
             + extra, runner='ood', protocols={'PROTEINS': None})
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert '--ddp' in err and message in err


def test_runner_ddp_needs_torchrun(monkeypatch, capsys, tmp_path):
    from pyg_hma.runners.cli import main
    for name in ('RANK', 'WORLD_SIZE'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        main(['--dataset', 'PROTEINS', '--ddp', '--out', str(tmp_path)],
             runner='ood', protocols={'PROTEINS': None})
    assert 'torchrun --nproc-per-node' in capsys.readouterr().err
