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
