r"""Throughput of seed-batched training (:func:`pyg_hma.train.seed_batch.fit_seeds`).

Trains S = 1, 4, 10 seeds side by side as one stacked model and, in the same
process and interleaved step by step, S models one after the other (the
engine's own loop: the method's objective, backward, fused Adam), on NCI1
with CIGA's GCN (3 layers, 32 dims, dropout 0.3, mean pooling), batch 32, for
ERM and HMA (momentum encoder, queue 256, 8 slots per class). A step
includes fetching the batches. Prints ms per model-step and the throughput
ratio (sequential ms per model-step / batched ms per model-step)::

    PYTHONPATH=. python benchmarks/seed_batch_speed.py --out results/seed_batch
    PYTHONPATH=. python benchmarks/seed_batch_speed.py --quick   # seconds
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from pyg_hma.data import load_dataset
from pyg_hma.methods import METHODS, Criterion, StepContext
from pyg_hma.models import build_model
from pyg_hma.train.engine import _adam, seed_everything
from pyg_hma.loader import as_batch, get_loader_factory
from pyg_hma.train.seed_batch import stacked_objective
from pyg_hma.train.stacked import Noise, StackedModel, UnionBatch


def model_fn(splits, method):
    return lambda: build_model(
        'gcn', method, num_classes=splits.num_classes,
        num_features=splits.num_features,
        backbone_kwargs=dict(hidden_channels=32, num_layers=3, dropout=0.3,
                             pooling='mean'),
        hma_kwargs=dict(memory_size=256, slots_per_class=8, label_dim=16,
                        check_inputs=False))


def endless(factory, dataset, batch_size, seed):
    gen = torch.Generator().manual_seed(seed)
    loader = factory(dataset, batch_size=batch_size, shuffle=True,
                     device=torch.device('cpu'), generator=gen)
    # Full batches only: every seed of a group sees B graphs.
    return (b for _ in itertools.count() for b in loader
            if b.num_graphs == batch_size)


class Sequential:
    r"""S models trained one after the other (one step each)."""
    def __init__(self, make, method, seeds, batches):
        self.models, self.opts = [], []
        for s in seeds:
            seed_everything(s)
            m = make()
            self.models.append(m.train())
            self.opts.append(_adam([p for p in m.parameters()
                                    if p.requires_grad], lr=1e-3))
        self.objective = METHODS[method].objective
        self.crit, self.ctx = Criterion('ce'), StepContext(1)
        self.batches = batches

    def step(self):
        for m, opt, it in zip(self.models, self.opts, self.batches):
            batch = as_batch(next(it), torch.device('cpu'))
            opt.zero_grad(set_to_none=True)
            loss, _, _ = self.objective(m, batch, self.crit, self.ctx)
            loss.backward()
            opt.step()


class Batched:
    r"""S models as one stacked model (one step for all)."""
    def __init__(self, make, method, seeds, batches):
        models = []
        for s in seeds:
            seed_everything(s)
            models.append(make())
        self.model = StackedModel(models)
        self.opt = _adam(self.model.parameters(), lr=1e-3)
        self.noise = Noise([torch.Generator().manual_seed(s) for s in seeds])
        self.objective = METHODS[method].objective
        self.crit, self.ctx = Criterion('ce'), StepContext(1)
        self.batches = batches

    def step(self):
        data = UnionBatch([as_batch(next(it), torch.device('cpu'))
                           for it in self.batches])
        self.opt.zero_grad(set_to_none=True)
        loss, _, _ = stacked_objective(self.objective, self.model, data,
                                       self.crit, self.ctx, self.noise)
        loss.sum().backward()
        self.opt.step()


def measure(splits, method, S, args, factory):
    make = model_fn(splits, method)
    seeds = list(range(S))
    runners = {
        'batched': Batched(make, method, seeds, [
            endless(factory, splits.train, args.batch_size, s)
            for s in seeds]),
        'sequential': Sequential(make, method, seeds, [
            endless(factory, splits.train, args.batch_size, 100 + s)
            for s in seeds])}
    times = {k: [] for k in runners}
    for i in range(args.warmup + args.steps):  # interleaved, step by step
        for name, runner in runners.items():
            tic = time.perf_counter()
            runner.step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - tic)
    ms = {k: 1000 * statistics.median(v) / S for k, v in times.items()}
    return {'S': S, 'ms_per_model_step': ms,
            'throughput_ratio': ms['sequential'] / ms['batched']}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='NCI1')
    p.add_argument('--methods', nargs='+', default=['erm', 'hma'])
    p.add_argument('--sizes', nargs='+', type=int, default=[1, 4, 10])
    p.add_argument('--steps', type=int, default=40)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--loader', default='device', choices=['pyg', 'device'])
    p.add_argument('--quick', action='store_true',
                   help='a few steps, S = 1 and 4 (a smoke test)')
    p.add_argument('--out', type=Path, help='write DIR/seed_batch_speed.json')
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.sizes = 4, 1, [1, 4]
    torch.set_num_threads(args.threads)
    splits = load_dataset(args.dataset)
    factory = get_loader_factory(args.loader)
    rows = {}
    print(f'{args.dataset} GCN 3x32, batch {args.batch_size}, '
          f'{args.threads} thread(s), loader {args.loader}, median of '
          f'{args.steps} steps')
    print(f"{'method':<6} {'S':>3} {'batched ms/model-step':>22} "
          f"{'sequential ms/model-step':>25} {'ratio':>6}")
    for method in args.methods:
        rows[method] = []
        for S in args.sizes:
            r = measure(splits, method, S, args, factory)
            rows[method].append(r)
            ms = r['ms_per_model_step']
            print(f"{method:<6} {S:>3} {ms['batched']:>22.2f} "
                  f"{ms['sequential']:>25.2f} {r['throughput_ratio']:>5.2f}x",
                  flush=True)
    report = {
        'dataset': args.dataset, 'backbone': 'gcn 3x32 (CIGA)',
        'batch_size': args.batch_size, 'threads': args.threads,
        'loader': args.loader, 'steps': args.steps,
        'torch': torch.__version__, 'rows': rows,
        'seed_batch': {'throughput_ratio': {
            m: rows[m][-1]['throughput_ratio'] for m in rows},
            'S': args.sizes[-1]}}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / 'seed_batch_speed.json'
        path.write_text(json.dumps(report, indent=1))
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
