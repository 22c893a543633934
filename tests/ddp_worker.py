r"""One small distributed training run, for tests/test_distributed.py.

Started by ``python -m torch.distributed.run --nproc-per-node 2`` (each rank
runs this file), or imported to run the same training in one process. It
trains a small GIN (BatchNorm in every layer, no dropout) on a synthetic
graph problem and writes into ``--out``, per method and rank: the per-step
(local mean loss, local batch size) pairs, the model's state after every
epoch and the result.
"""
import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch

# Run as a script from the repository: import this checkout's pyg_hma.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyg_hma.train.engine as engine  # noqa: E402
from pyg_hma.data import DatasetSplits  # noqa: E402
from pyg_hma.models import build_model  # noqa: E402
from pyg_hma.train import TrainConfig, fit  # noqa: E402

# 36 training graphs in batches of 7: five global batches (split 4 + 3 over
# two ranks) and a last one of a single graph (skipped, as in one process);
# 17 graphs per eval split: a last eval batch of 3.
CFG = TrainConfig(epochs=3, batch_size=7, lr=5e-3, eval_mode='shuffled')


def synthetic_splits(seed: int = 0) -> DatasetSplits:
    from torch_geometric.data import Data
    gen = torch.Generator().manual_seed(seed)

    def graph():
        n = int(torch.randint(4, 9, (1, ), generator=gen))
        x = torch.randn(n, 5, generator=gen)
        ring = torch.arange(n)
        edge_index = torch.stack([torch.cat([ring, (ring + 1) % n]),
                                  torch.cat([(ring + 1) % n, ring])])
        y = torch.tensor([int(x[:, 0].mean() > 0)])
        return Data(x=x, edge_index=edge_index, y=y)

    train, val, test = ([graph() for _ in range(k)] for k in (36, 17, 17))
    return DatasetSplits(name='synthetic', train=train, val=val, test=test,
                         num_features=5, num_classes=2, metric='accuracy')


DATA_SEED = 6  # a seed whose runs pass no ReLU input near 0: see train()


def train(method: str, out: Path, ddp: bool, resume: bool = False,
          kill_at_epoch: int = 0, rank: int = 0,
          data_seed: int = DATA_SEED) -> dict:
    r"""Trains one run; writes its steps, states and result under
    :obj:`out` with the suffix ``rank{rank}``.

    The result's ``relu_margin`` is the smallest :math:`|x|` that entered a
    ReLU in training (the node encoder's and every BatchNorm's outputs;
    but the last layer's; recorded in one process only: SyncBatchNorm replaces the hooked
    modules). Two ranks and one process agree to float noise (~1e-7) only
    while no ReLU input is closer to 0 than that noise: a closer one can
    take the other side and switch a whole unit's gradient (found with
    data seed 0, whose HMA run met a ReLU input of 1.0e-6 at step 8).
    """
    splits = synthetic_splits(data_seed)
    steps, built, margin = [], {}, [float('inf')]

    def record_margin(module, inputs, output):
        if module.training:
            margin[0] = min(margin[0], float(output.detach().abs().min()))

    class Recording(engine.Criterion):
        def mean(self, logits, y):
            loss = super().mean(logits, y)
            steps.append((float(loss.detach()), int(logits.size(0))))
            return loss

    def model_fn():
        built['model'] = build_model(
            'gin', method, num_classes=2, num_features=5,
            backbone_kwargs=dict(hidden_channels=16, num_layers=2,
                                 dropout=0.0),
            hma_kwargs=dict(memory_size=16, slots_per_class=2, label_dim=8,
                            dropout=0.0, check_inputs=False))
        encoder = built['model'].encoder
        # Every module whose output enters a ReLU (the last layer's
        # BatchNorm goes to the pooling).
        for module in [encoder.node_encoder, *encoder.modules()]:
            if module is encoder.norms[-1]:
                continue
            if module is encoder.node_encoder or isinstance(
                    module, torch.nn.BatchNorm1d):
                module.register_forward_hook(record_margin)
        return built['model']

    def after_epoch(epoch, rec):
        torch.save(built['model'].state_dict(),
                   out / f'{method}_state_epoch{epoch}_rank{rank}.pt')
        if epoch == kill_at_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    def adam(params, **kwargs):
        # A larger epsilon: gradients that are zero in exact arithmetic
        # (biases before a BatchNorm, the RMA block's query projection
        # while the queue is empty) hold float noise that differs between
        # one process and two ranks, and Adam's default epsilon (1e-8)
        # turns noise of 1e-9 into steps of a tenth of the learning rate.
        return torch.optim.Adam(params, eps=1e-4, **kwargs)

    saved = engine.Criterion, engine.fused_adam
    engine.Criterion, engine.fused_adam = Recording, adam
    try:
        res = fit(model_fn, splits, method, CFG, seed=0, loader='pyg',
                  checkpoint=out / f'{method}.ckpt', resume=resume,
                  callbacks=[after_epoch], ddp=ddp)
    finally:
        engine.Criterion, engine.fused_adam = saved
    result = dict(val=res.val, test=res.test,
                  selected_epoch=res.selected_epoch,
                  skipped=res.skipped_batches, resumed_from=res.resumed_from,
                  relu_margin=None if ddp else margin[0],
                  history=[{k: v for k, v in h.items() if k != 'time_s'}
                           for h in res.history])
    (out / f'{method}_steps_rank{rank}.json').write_text(json.dumps(steps))
    (out / f'{method}_result_rank{rank}.json').write_text(
        json.dumps(result))
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--out', type=Path, required=True)
    p.add_argument('--method', nargs='+', default=['erm', 'hma'])
    p.add_argument('--resume', action='store_true')
    p.add_argument('--kill-rank', type=int, default=-1)
    p.add_argument('--kill-at-epoch', type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ['RANK'])
    for method in args.method:
        train(method, args.out, ddp=True, resume=args.resume, rank=rank,
              kill_at_epoch=(args.kill_at_epoch if rank == args.kill_rank
                             else 0))


if __name__ == '__main__':
    main()
