r"""Training and inference speed of a backbone alone (ERM) and with HMA.

For one dataset, backbone and device, every method (ERM, HMA and each of its
ablations) trains with its runner's protocol (``PROTOCOLS`` of
:mod:`pyg_hma.runners.protocols`: ``ood``, ``ogb_mol``, ``tu_id``) and the
engine's training step (:func:`pyg_hma.train.engine.train_step`, fused
Adam), **in the same run, interleaved** (one step of each after a
warm-up), on the data paths of the runners:

* ``pyg``: PyG's ``DataLoader``, each batch moved to the device
  (``--loader pyg``, the runners' default);
* ``fast``: the split resident on the device, batched by index
  (``--loader device``);
* ``static`` (on request, ``--paths ... static``): the fast path with every
  batch padded to multiples of ``--pad`` and the model ``torch.compile``-d
  with ``--static-mode`` (``reduce-overhead``, i.e. CUDA graphs, on a GPU;
  ``default`` on a CPU): the runners' ``--pad``/``--compile``. Compilation
  happens in the warm-up (give it 30+ steps).

Reported per path and method: median milliseconds per training step (data
loading included), seconds per training epoch (the engine's
``train_epoch``), the HMA/ERM ratios, evaluation graphs per second for both
HMA inference modes (``batch`` and ``independent``) and peak memory (CUDA's
``max_memory_allocated``; on a CPU the process's RSS high-water mark).
Beside the ERM step, its **sgemm floor**: the GEMM FLOPs of the step (every
linear layer's forward GEMM, e.g. GIN's 5 layers x its MLP's two, backward
counted as twice the forward) at the sgemm rate measured on the same shapes
with the same threads (one thread: the study's setting), i.e. the least time
the step's dense algebra takes.

``--seed-batch N`` times seed-batched training instead
(:func:`pyg_hma.train.fit_seeds`' step): groups of S = 1, 4 and N seeds as
one stacked model against S single-seed models stepped one after the other,
interleaved, for ERM and HMA; it prints ms per model-step and the
throughput ratio (sequential / batched). Graph datasets and Colored MNIST
(``--dataset CMNIST --backbone mlp``, ``--dataset CMNIST-28 --backbone
cnn``).

Examples::

    python benchmarks/speed.py --dataset ogbg-molhiv --backbone GIN
    python benchmarks/speed.py --dataset NCI1 --out results/speed
    python benchmarks/speed.py --quick --synthetic          # seconds, for CI
    python benchmarks/speed.py --dataset NCI1 --breakdown   # HMA's costs
    python benchmarks/speed.py --dataset NCI1 --profile hma  # profiler table
    python benchmarks/speed.py --dataset NCI1 --backbone GCN --seed-batch 10

``--synthetic`` draws random graphs with the dataset's feature schema and
size statistics (random images for Colored MNIST); ``--exported DIR``
reads splits written by ``python -m pyg_hma.data export`` (no ogb or RDKit
needed). ``hma-online-keys`` is a
diagnostic row, not a paper method: HMA without its momentum encoder
(``momentum=None``: the queue receives the online embeddings). A run
stopped early (Ctrl-C, or SIGTERM from ``timeout``) still writes what it
measured. Results and their reading: ``docs/performance.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch.utils.data import TensorDataset

from pyg_hma.command_line import OneLineParser
from pyg_hma.data import DatasetSplits, load_dataset
from pyg_hma.files import atomic_path, folder_problem
from pyg_hma.loader import PaddedLoader, as_batch, get_loader_factory
from pyg_hma.methods import METHODS, Criterion, StepContext
from pyg_hma.models import BACKBONES, build_model
from pyg_hma.models.encoders import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS
from pyg_hma.nn import hma_functional, stacked as stacked_layers
from pyg_hma.runners.cli import parse_pad_steps
from pyg_hma.train.engine import (COMPILE_MODES, TrainConfig, compile_model,
                                  fused_adam, predict, train_epoch,
                                  train_step)
from pyg_hma.train.metrics import compute_metric
from pyg_hma.runners.protocols import runner_protocols
from pyg_hma.train.seed_batch import seed_batch_support, stacked_train_step
from pyg_hma.train.stacked import Noise, StackedModel, union_of

PROTOCOLS = {name: protocol for name, (runner, protocol)
             in runner_protocols().items()}
# Diagnostic, not a paper row: full HMA without a momentum encoder.
ONLINE_KEYS = 'hma-online-keys'
ALL_METHODS = ('erm', ) + METHODS.names(lambda s: s.uses_hma) + (ONLINE_KEYS, )
ALL_PATHS = ('pyg', 'fast', 'static')
LOADER_OF_PATH = {'pyg': 'pyg', 'fast': 'device', 'static': 'device'}


def registered(method: str) -> str:
    r"""The :data:`~pyg_hma.methods.METHODS` entry that :obj:`method`
    trains."""
    return 'hma' if method == ONLINE_KEYS else method

# --synthetic: each dataset's feature schema ('ogb': 9 atom and 3 bond
# integer features; 'onehot' node labels; 'dense' floats), features, classes,
# metric, train and val graphs (the project's splits), mean nodes per graph
# and directed edges per node.
SHAPES = {
    'ogbg-molhiv': ('ogb', 9, 2, 'rocauc', 32901, 4113, 25.5, 2.16),
    'ogbg-molbace': ('ogb', 9, 2, 'rocauc', 1210, 151, 34.1, 2.16),
    'ogbg-molbbbp': ('ogb', 9, 2, 'rocauc', 1631, 204, 24.1, 2.16),
    'NCI1': ('onehot', 37, 2, 'mcc', 1942, 215, 20.8, 2.15),
    'NCI109': ('onehot', 38, 2, 'mcc', 1872, 207, 29.7, 2.16),
    'PROTEINS': ('onehot', 3, 2, 'mcc', 511, 56, 39.1, 3.73),
    'DD': ('onehot', 89, 2, 'mcc', 535, 59, 284.3, 5.03),
    'Graph-SST5': ('dense', 384, 5, 'accuracy', 5905, 1186, 11.8, 1.83),
    'Graph-Twitter': ('dense', 384, 3, 'accuracy', 4998, 624, 21.1, 1.9),
    # Images: 2 x 14 x 14 and 2 x 28 x 28 (no nodes or edges).
    'CMNIST': ('image', 392, 2, 'accuracy', 45000, 5000, 0, 0),
    'CMNIST-28': ('image', 1568, 2, 'accuracy', 45000, 5000, 0, 0),
}


# Data ########################################################################

def synthetic_graphs(name: str, num_graphs: int, seed: int):
    r"""Random graphs shaped like dataset :obj:`name` (:data:`SHAPES`): a
    random tree plus extra edges (both directions stored), node counts
    around the dataset's mean, its feature schema and label format (a list
    of ``Data``); for an image dataset, random images with labels and
    environments (a ``TensorDataset``)."""
    schema, features, classes, _, _, _, avg_nodes, per_node = SHAPES[name]
    gen = torch.Generator().manual_seed(seed)
    if schema == 'image':  # Colored MNIST's (x, y, env) samples
        side = int(round((features / 2) ** 0.5))
        return TensorDataset(
            torch.rand(num_graphs, 2, side, side, generator=gen),
            torch.randint(0, 2, (num_graphs, ), generator=gen),
            torch.randint(0, 2, (num_graphs, ), generator=gen))
    extra = max(per_node / 2 - 1, 0.0)  # undirected edges beyond the tree
    sizes = (torch.poisson(torch.full((num_graphs, ), avg_nodes - 2),
                           generator=gen) + 2).long().tolist()
    graphs = []
    for n in sizes:
        parent = (torch.rand(n - 1, generator=gen) * torch.arange(1, n)).long()
        m = int(round(extra * n))
        src = torch.cat([parent, torch.randint(0, n, (m, ), generator=gen)])
        dst = torch.cat([torch.arange(1, n),
                         torch.randint(0, n, (m, ), generator=gen)])
        edge_index = torch.stack([torch.cat([src, dst]),
                                  torch.cat([dst, src])])
        draw = lambda dims, rows: torch.stack(  # noqa: E731
            [torch.randint(0, d, (rows, ), generator=gen) for d in dims], 1)
        if schema == 'ogb':
            graphs.append(Data(
                x=draw(ATOM_FEATURE_DIMS, n), edge_index=edge_index,
                edge_attr=draw(BOND_FEATURE_DIMS, edge_index.size(1)),
                y=torch.randint(0, 2, (1, 1), generator=gen)))
            continue
        x = (F.one_hot(torch.randint(0, features, (n, ), generator=gen),
                       features).float() if schema == 'onehot'
             else torch.randn(n, features, generator=gen))
        graphs.append(Data(x=x, edge_index=edge_index,
                           y=torch.randint(0, classes, (1, ), generator=gen)))
    return graphs


def load_splits(args) -> DatasetSplits:
    r"""The dataset's train and val splits, cut to ``--max-graphs`` and
    ``--eval-graphs``."""
    limit = args.max_graphs or None
    eval_limit = args.eval_graphs or (limit // 2 if limit else None)
    if args.synthetic:
        if args.dataset not in SHAPES:
            raise ValueError(f"--synthetic knows the shapes of "
                             f"{', '.join(SHAPES)}, not '{args.dataset}'")
        schema, features, classes, metric, train, val, _, _ = \
            SHAPES[args.dataset]
        train = synthetic_graphs(args.dataset, min(train, limit or train),
                                 args.seed)
        val = synthetic_graphs(args.dataset, min(val, eval_limit or val),
                               args.seed + 1)
        return DatasetSplits(args.dataset, train, val, val, features,
                             classes, metric,
                             task='image' if schema == 'image' else 'graph',
                             info={'source': 'synthetic'})
    splits = load_dataset(args.dataset, root=args.root, seed=args.seed,
                          exported=args.exported,
                          **PROTOCOLS[args.dataset].dataset_kwargs)
    first = lambda split, k: split if not k else [  # noqa: E731
        split[i] for i in range(min(len(split), k))]
    source = (f'exported ({args.exported})' if args.exported
              else 'pyg_hma.data.load_dataset')
    return replace(splits, train=first(splits.train, limit),
                   val=first(splits.val, eval_limit),
                   info={**splits.info, 'source': source})


class Loaders:
    r"""The loaders of one split on every path. The device-resident copy of
    the split is built once and shared: each loader gets its own generator
    seeded with :obj:`seed`, so every method sees the same batches."""
    def __init__(self, graphs, batch_size: int, shuffle: bool, device,
                 pad):
        self.graphs, self.batch_size, self.shuffle = graphs, batch_size, \
            shuffle
        self.device, self.pad = device, pad
        self.resident, self.build_s = None, None

    def __call__(self, path: str, seed: int):
        gen = torch.Generator().manual_seed(seed)
        factory = get_loader_factory(LOADER_OF_PATH[path])
        if path == 'pyg':
            return factory(self.graphs, batch_size=self.batch_size,
                           shuffle=self.shuffle, device=self.device,
                           generator=gen)
        if self.resident is None:  # flattening 33k molecules takes seconds
            start = time.perf_counter()
            self.resident = factory(self.graphs, batch_size=self.batch_size,
                                    shuffle=self.shuffle, device=self.device)
            self.build_s = time.perf_counter() - start
        loader = copy.copy(self.resident)
        loader.generator = gen
        return PaddedLoader(loader, *self.pad) if path == 'static' else loader


def endless(loader, device):
    r"""Batches of :obj:`loader` on :obj:`device` (image samples as a
    :class:`~pyg_hma.loader.TensorBatch`), epoch after epoch, without those
    of one sample (which ``train_epoch`` skips too: BatchNorm needs two)."""
    while True:
        for batch in loader:
            batch = as_batch(batch, device)
            if batch.num_graphs >= 2:
                yield batch


# Models and their training step ##############################################

@dataclass
class Bench:
    r"""What every trainer of a run shares."""
    splits: DatasetSplits
    cfg: TrainConfig
    backbone: str
    protocol: Any
    device: torch.device
    loaders: Loaders


def build(bench: Bench, method: str, seed: int) -> torch.nn.Module:
    r"""The model of :obj:`method` as its runner builds it (without HMA's
    input checks, as the engine runs it), on the device."""
    torch.manual_seed(seed)  # every method starts from the same backbone
    splits, proto = bench.splits, bench.protocol
    return build_model(
        bench.backbone, registered(method),
        num_classes=splits.num_classes, num_features=splits.num_features,
        input_shape=splits.input_shape,
        out_channels=splits.num_tasks if bench.cfg.loss == 'bce' else None,
        backbone_kwargs=proto.backbone_kwargs,
        hma_kwargs={**proto.hma, 'check_inputs': False},
        momentum=None if method == ONLINE_KEYS else proto.momentum,
    ).to(bench.device)


class Trainer:
    r"""One (path, method): its model, optimizer, loader and the engine's
    step."""
    def __init__(self, bench: Bench, path: str, method: str, args,
                 seed: Optional[int] = None):
        self.bench, self.path, self.method = bench, path, method
        seed = args.seed if seed is None else seed
        self.model = model = build(bench, method, seed)
        self.compiled = path == 'static' or (path == 'fast' and
                                             args.compile == 'model')
        if path == 'static':
            # Padded batches come in a few shapes: after the first
            # recompile one graph serves them all ('reduce-overhead': one
            # CUDA graph per shape).
            compile_model(model, args.static_mode)
        elif self.compiled:
            compile_model(model)
        elif path == 'fast' and args.compile == 'readout' and \
                method != 'erm':
            model.readout = torch.compile(model.readout, dynamic=False)
        self.params = [p for p in model.parameters() if p.requires_grad]
        cfg = bench.cfg
        self.optimizer = fused_adam(self.params, lr=cfg.lr,
                                    weight_decay=cfg.weight_decay)
        self.objective = METHODS[registered(method)].objective
        self.crit = Criterion(cfg.loss)
        self.ctx = StepContext(1)  # ERM and HMA: no hyperparameters
        self.loader = bench.loaders(path, seed)
        self.batches = endless(self.loader, bench.device)
        self.loss_sum = torch.zeros((), device=bench.device)

    def step(self):
        batch = next(self.batches)  # on the device already (endless)
        loss, _, _ = train_step(self.model, batch, self.objective, self.crit,
                                self.ctx, self.optimizer, self.params,
                                self.bench.cfg.clip_grad_norm, self.compiled)
        self.loss_sum += loss.detach()
        return loss

    def epoch(self):
        s = self.bench.splits
        train_epoch(self.model, self.loader, self.objective, self.crit,
                    self.ctx, self.optimizer, self.params, self.bench.cfg,
                    self.bench.device, s.metric, s.name, self.compiled)

    def evaluate(self, loader, inference: str):
        if self.method != 'erm':
            self.model.readout.inference = inference
        predict(self.model, loader, self.bench.device)
        self.model.train()


# Timing ######################################################################

def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(xs):
    return statistics.median(xs) if xs else None


def peak_memory_mb(device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == 'darwin' else 1024  # ru_maxrss: KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def time_paths(args, bench: Bench, report: dict) -> None:
    r"""Steps, epochs, evaluation and memory of every (path, method), each
    measurement written into :obj:`report` as soon as it is taken."""
    device, splits = bench.device, bench.splits
    eval_loaders = Loaders(splits.val, args.eval_batch_size, False, device,
                           args.pad)
    trainers = [Trainer(bench, path, method, args)
                for path in args.paths for method in args.methods]
    rows = {}
    for t in trainers:
        rows[t] = report['results'].setdefault(t.path, {})[t.method] = {
            'step_ms_all': [], 'epoch_s_all': [], 'eval_s': {},
            'params': sum(p.numel() for p in t.params)}
    report['steps_per_epoch'] = len(trainers[0].loader)
    report['device_loader_build_s'] = bench.loaders.build_s

    # First calls import libraries (seconds): the train metric of an epoch,
    # the CUDA-graph step marker of an evaluation. Not what is timed.
    y, logits = torch.tensor([0, 1]), torch.zeros(2, splits.num_classes)
    if bench.cfg.loss == 'bce':
        y, logits = y.view(2, 1), logits[:, :1]
    compute_metric(splits.metric, logits, y, splits.name)
    first = trainers[0]
    first.evaluate([next(iter(eval_loaders(first.path, 0)))], 'batch')

    def drain(loader):
        for batch in loader:
            as_batch(batch, device)
    for _ in range(2):  # the loaders alone; the first pass warms up
        for t in trainers:
            if t.method == 'erm':
                loader = bench.loaders(t.path, args.seed)
                rows[t]['loader_ms_per_batch'] = timed(
                    lambda: drain(loader), device) * 1e3 / len(loader)
    print(f'timing {args.steps} steps after {args.warmup} warm-up steps of '
          f'{len(trainers)} (path, method)', flush=True)
    for i in range(args.warmup + args.steps):  # steps, interleaved
        for t in trainers:
            dt = timed(t.step, device)
            if i >= args.warmup:
                rows[t]['step_ms_all'].append(dt * 1e3)
    print('ms per step: ' + ', '.join(
        f'{t.path}/{t.method} {median(rows[t]["step_ms_all"]):.2f}'
        for t in trainers), flush=True)
    for _ in range(args.epochs):  # whole epochs, interleaved
        for t in trainers:
            if t.method in args.epoch_methods:
                rows[t]['epoch_s_all'].append(timed(t.epoch, device))
                print(f'epoch {t.path}/{t.method}: '
                      f'{rows[t]["epoch_s_all"][-1]:.2f} s', flush=True)
    for _ in range(args.eval_repeats):
        for t in trainers:
            loader = eval_loaders(t.path, args.seed)
            for mode in ('batch', ) if t.method == 'erm' else \
                    ('batch', 'independent'):
                rows[t]['eval_s'].setdefault(mode, []).append(
                    timed(lambda: t.evaluate(loader, mode), device))
    for t in trainers:  # peak memory, one (path, method) at a time
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.memory_steps):
            t.step()
        sync(device)
        rows[t]['peak_memory_mb'] = peak_memory_mb(device)
    erm = next((t for t in trainers if t.method == 'erm' and
                not t.compiled), None)
    if erm is not None:  # after everything timed: extra steps of ERM
        report['gemm_floor'] = gemm_floor(erm, device)
    for t in trainers:
        if not torch.isfinite(t.loss_sum):
            raise RuntimeError(f'{t.path}/{t.method}: non-finite loss')


# The sgemm floor of a step ###################################################

@contextmanager
def recorded_linears():
    r"""Records every call of the layers' one linear map
    (:func:`pyg_hma.nn.stacked.linear`, which every module's forward runs)
    as ``{weight storage: [input rows, ...]}`` with ``(K, N)`` beside."""
    calls: Dict[int, list] = {}
    original = stacked_layers.linear

    def recording(x, w, b, rows=None):
        entry = calls.setdefault(w.data_ptr(), [w.shape[-1], w.shape[-2],
                                                []])
        entry[2].append(x.numel() // x.shape[-1])
        return original(x, w, b, rows)
    patched = [m for name, m in list(sys.modules.items())
               if name.startswith('pyg_hma.')
               and getattr(m, 'linear', None) is original]
    for m in patched:
        m.linear = recording
    try:
        yield calls
    finally:
        for m in patched:
            m.linear = original


def gemm_floor(trainer: 'Trainer', device, steps: int = 4,
               repeats: int = 10) -> dict:
    r"""The sgemm floor of :obj:`trainer`'s step: the GEMMs of its
    forward (every linear map, ``M`` its input rows averaged over
    :obj:`steps` steps), backward counted as twice the forward, at the
    rate of ``F.linear`` (bias left out) measured on the same shapes with
    this process's threads: the least time those FLOPs take, whatever else
    the step does (message passing, the optimizer, the loader)."""
    with recorded_linears() as calls:
        for _ in range(steps):
            trainer.step()
    shapes: Dict[tuple, float] = {}  # (M, K, N): GEMMs per step
    for k, n_out, rows in calls.values():
        shape = (round(statistics.mean(rows)), k, n_out)
        shapes[shape] = shapes.get(shape, 0) + len(rows) / steps
    seconds, flops = 0.0, 0.0
    table = []
    for (m_rows, k, n_out), count in sorted(shapes.items()):
        a = torch.randn(m_rows, k, device=device)
        w = torch.randn(n_out, k, device=device)
        for _ in range(2):
            F.linear(a, w)
        t = median([timed(lambda: F.linear(a, w), device)
                    for _ in range(repeats)])
        gemm = 2.0 * m_rows * k * n_out
        seconds += 3 * count * t
        flops += 3 * count * gemm
        table.append(dict(shape=[m_rows, k, n_out], per_step=count,
                          gflops=gemm / t / 1e9 if t > 0 else None))
    return dict(path=trainer.path, floor_ms=seconds * 1e3,
                gflop_per_step=flops / 1e9,
                gflops=flops / seconds / 1e9 if seconds > 0 else None,
                threads=torch.get_num_threads(), shapes=table)


def floor_line(report: dict) -> Optional[str]:
    r"""The step beside its sgemm floor (:func:`gemm_floor`)."""
    floor = report.get('gemm_floor')
    if not floor or not floor['floor_ms']:
        return None
    step = report['results'].get(floor['path'], {}).get('erm', {}).get(
        'step_ms')
    shapes = ', '.join(
        f"[{m}, {k}] x [{k}, {n}]" + (f" ({c:g} per step)" if c != 1
                                      else '')
        for (m, k, n), c in ((s['shape'], s['per_step'])
                             for s in floor['shapes']))
    return (f"sgemm floor of the ERM step ({floor['path']}): "
            f"{floor['floor_ms']:.2f} ms = {floor['gflop_per_step']:.3f} "
            f"GFLOP of GEMMs (forward {shapes}; backward counted as twice "
            f"the forward) at {floor['gflops']:.1f} GFLOP/s, sgemm measured "
            f"on those shapes with {floor['threads']} thread(s)"
            + (f"; ERM step {step:.2f} ms = {step / floor['floor_ms']:.2f}x "
               f"the floor" if step else ''))


def summarize(report: dict) -> None:
    r"""Medians and ratios of whatever :func:`time_paths` measured."""
    val = report.get('val_graphs', 0)
    for per_method in report.get('results', {}).values():
        for res in per_method.values():
            res['step_ms'] = median(res['step_ms_all'])
            res['epoch_s'] = median(res['epoch_s_all'])
            res['eval_graphs_per_s'] = {
                mode: val / median(s) for mode, s in res['eval_s'].items()}
        erm = per_method.get('erm', {})
        for method, res in per_method.items():
            for key, ratio in (('step_ms', 'step_ratio'),
                               ('epoch_s', 'epoch_ratio')):
                if method != 'erm' and res[key] and erm.get(key):
                    res[ratio] = res[key] / erm[key]
    results = report.get('results', {})
    for path in ('fast', 'static'):
        for method, res in results.get(path, {}).items():
            pyg = results.get('pyg', {}).get(method, {}).get('step_ms')
            if pyg and res['step_ms']:
                res['speedup_vs_pyg'] = pyg / res['step_ms']


def print_table(report: dict) -> None:
    env = report['environment']
    print(f"\n{report['dataset']} ({report['data_source']}), backbone "
          f"{report['backbone']}, batch {report['batch_size']}, "
          f"{report['train_graphs']} train graphs "
          f"({report.get('steps_per_epoch')} steps/epoch), device "
          f"{env['device']} [{env['device_name']}], torch {env['torch']}, "
          f"PyG {env['torch_geometric']}")
    print('loader alone, ms per batch: ' + ', '.join(
        f"{path} {per['erm']['loader_ms_per_batch']:.2f}"
        for path, per in report['results'].items()
        if 'loader_ms_per_batch' in per.get('erm', {})))
    mem = 'peak MiB' if env['device'].startswith('cuda') else 'RSS HWM MiB'
    head = (f"{'path':6} {'method':16} {'ms/step':>8} {'x ERM':>6} "
            f"{'s/epoch':>8} {'x ERM':>6} {'eval g/s batch':>15} "
            f"{'indep.':>9} {mem:>12} {'vs pyg':>7}")
    print(f"{head}\n{'-' * len(head)}")
    num = lambda v, fmt: format(v, fmt) if v is not None else \
        format(float('nan'), fmt)  # noqa: E731
    for path, per_method in report['results'].items():
        for method, r in per_method.items():
            ev = r['eval_graphs_per_s']
            print(f"{path:6} {method:16} {num(r['step_ms'], '8.2f')} "
                  f"{num(r.get('step_ratio', 1.0), '6.3f')} "
                  f"{num(r['epoch_s'], '8.2f')} "
                  f"{num(r.get('epoch_ratio', r['epoch_s'] and 1.0), '6.3f')} "
                  f"{num(ev.get('batch'), '15.0f')} "
                  f"{num(ev.get('independent'), '9.0f')} "
                  f"{num(r.get('peak_memory_mb'), '12.0f')} "
                  f"{num(r.get('speedup_vs_pyg'), '7.2f')}")
    line = floor_line(report)
    if line:
        print(line)


# Seed-batched training #######################################################

def time_seed_batches(args, bench: Bench, report: dict) -> None:
    r"""ms per model-step of S seeds as one stacked model
    (:func:`~pyg_hma.train.seed_batch.stacked_train_step`) against S
    models stepped one after the other (the engine's step), interleaved
    step by step; full batches only (a group's seeds see B graphs each).
    On the static path the group's union is padded to multiples of
    ``--pad`` with hashed dropout and its forward compiled (``fit_seeds``
    with ``pad`` and ``compile``); the sequential models are the static
    path's (padded, compiled)."""
    sizes = sorted({s for s in (1, 4, args.seed_batch)
                    if s <= args.seed_batch})
    path, device, cfg = args.paths[0], bench.device, bench.cfg
    static = path == 'static'
    pad = args.pad if static else None
    out = report['seed_batch'] = {'sizes': sizes, 'path': path, 'rows': {},
                                  'throughput_ratio': {}}
    print(f"{'method':<16} {'S':>3} {'batched ms/model-step':>22} "
          f"{'sequential ms/model-step':>25} {'ratio':>6}")
    for method in args.methods:
        for S in sizes:
            seeds = [args.seed + s for s in range(S)]
            sequential = [Trainer(bench, path, method, args, seed=s)
                          for s in seeds]
            models = [build(bench, method, s) for s in seeds]
            reason = seed_batch_support(models[0], registered(method))
            if reason is not None:
                raise ValueError(f'--seed-batch: {reason} cannot be '
                                 f'seed-batched')
            stacked = StackedModel(models)
            if static:
                stacked.compile(args.static_mode)
            stacked.train()
            params = stacked.parameters()
            optimizer = fused_adam(params, lr=cfg.lr,
                                   weight_decay=cfg.weight_decay)
            noise = Noise([torch.Generator(device).manual_seed(s)
                           for s in seeds], static=static)
            batches = 'fast' if static else path  # the union pads
            full = [(b for b in endless(bench.loaders(batches, 100 + s),
                                        device)
                     if b.num_graphs == cfg.batch_size) for s in seeds]
            for t in sequential:  # the same full-batch rule
                t.batches = (b for b in t.batches
                             if b.num_graphs == cfg.batch_size)
            first = sequential[0]

            def batched_step():
                data = union_of([next(it) for it in full], pad)
                noise.new_step()
                stacked_train_step(stacked, data, first.objective,
                                   first.crit, first.ctx, noise, optimizer,
                                   params, cfg.clip_grad_norm)
            times = {'batched': [], 'sequential': []}
            for i in range(args.warmup + args.steps):
                for name, fn in (('batched', batched_step),
                                 ('sequential', lambda: [
                                     t.step() for t in sequential])):
                    dt = timed(fn, device)
                    if i >= args.warmup:
                        times[name].append(dt)
            ms = {k: 1e3 * median(v) / S for k, v in times.items()}
            ratio = ms['sequential'] / ms['batched']
            out['rows'].setdefault(method, []).append(
                {'S': S, 'ms_per_model_step': ms, 'throughput_ratio': ratio})
            out['throughput_ratio'].setdefault(method, {})[str(S)] = ratio
            print(f"{method:<16} {S:>3} {ms['batched']:>22.2f} "
                  f"{ms['sequential']:>25.2f} {ratio:>5.2f}x", flush=True)


# Where the time of an HMA step goes ##########################################

@contextmanager
def timing_hooks(model, device, times: Dict[str, List[float]]):
    r"""Times the forward of HMA's parts and the momentum update with
    forward hooks (exact on a CPU; on CUDA each hook synchronises)."""
    readout = getattr(model, 'readout', None)
    parts = {'encoder forward': model.encoder, 'readout forward': readout,
             'momentum encoder forward': getattr(model, 'momentum_encoder',
                                                 None)}
    handles, starts = [], {}
    for name, module in parts.items():
        if module is None:
            continue

        def pre(_m, _a, name=name):
            sync(device)
            starts[name] = time.perf_counter()

        def post(_m, _a, _o, name=name):
            sync(device)
            times.setdefault(name, []).append(time.perf_counter() -
                                              starts[name])
        handles += [module.register_forward_pre_hook(pre),
                    module.register_forward_hook(post)]

    def timed_call(orig, name_of):
        def wrapper(*a, **k):
            sync(device)
            start = time.perf_counter()
            result = orig(*a, **k)
            sync(device)
            name = name_of(*a)
            if name is not None:
                times.setdefault(name, []).append(time.perf_counter() -
                                                  start)
            return result
        return wrapper
    # The readout's blocks and queue write are functions of its one
    # definition (pyg_hma.nn.hma_functional), not module calls.
    blocks = {} if readout is None else {
        id(readout.rma_block): '  rma block forward',
        id(readout.sma_block): '  sma block forward'}
    patched = [(hma_functional, 'attention_block',
                timed_call(hma_functional.attention_block,
                           lambda block, *a: blocks.get(id(block)))),
               (hma_functional, 'write_queues',
                timed_call(hma_functional.write_queues,
                           lambda *a: '  queue write'))]
    momentum = parts['momentum encoder forward']
    if momentum is not None:
        patched.append((momentum, 'update',
                        timed_call(momentum.update,
                                   lambda *a: 'momentum update (EMA)')))
    originals = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patched]
    for obj, attr, wrapper in patched:
        setattr(obj, attr, wrapper)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for obj, attr, orig in originals:
            if obj is momentum:
                delattr(obj, attr)  # back to the class's method
            else:
                setattr(obj, attr, orig)


def breakdown(args, bench: Bench) -> dict:
    r"""Median time of every part of an ERM and an HMA step on the fast
    path, the two models' steps interleaved (so load hits both alike)."""
    device = bench.device
    trainers = {m: Trainer(bench, 'fast', m, args) for m in ('erm', 'hma')}
    times = {m: {} for m in trainers}
    totals = {m: [] for m in trainers}
    for i in range(args.warmup + args.steps):
        for method, t in trainers.items():
            if i < args.warmup:
                t.step()
                continue
            with timing_hooks(t.model, device, times[method]):
                totals[method].append(timed(t.step, device))
    # The readout's forward + backward alone, on fixed embeddings.
    model, bs = trainers['hma'].model, bench.cfg.batch_size
    h = torch.randn(bs, model.encoder.out_channels, device=device,
                    requires_grad=True)
    y = torch.randint(0, bench.splits.num_classes, (bs, ), device=device)
    alone = [timed(lambda: model.readout(h, y=y).sum().backward(), device)
             for _ in range(args.warmup + args.steps)][args.warmup:]
    times['hma']['readout forward+backward (alone)'] = alone
    out = {m: {'step': median(totals[m]) * 1e3,
               **{k: median(v) * 1e3 for k, v in times[m].items()}}
           for m in trainers}
    print(f"\nWhere the time goes ({args.dataset}, {bench.backbone}, batch "
          f"{bench.cfg.batch_size}, fast path, {device}), median ms:")
    for method, parts in out.items():
        print(f'  {method}:')
        for name, ms in parts.items():
            print(f'    {name:36} {ms:8.3f}')
    return out


def profile(args, bench: Bench) -> str:
    r"""A torch.profiler table of a few fast-path steps of ``--profile``."""
    t = Trainer(bench, 'fast', args.profile, args)
    for _ in range(args.warmup):
        t.step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            t.step()
        sync(bench.device)
    sort = ('self_cuda_time_total' if bench.device.type == 'cuda'
            else 'self_cpu_time_total')
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    print(f'\nProfile of {args.steps} {args.profile} steps:\n{table}')
    return table


# Command line ################################################################

def environment(device) -> dict:
    import torch_geometric
    env = {'device': str(device),
           'device_name': (torch.cuda.get_device_name(device)
                           if device.type == 'cuda' else
                           platform.processor() or platform.machine()),
           'torch': torch.__version__,
           'torch_geometric': torch_geometric.__version__,
           'python': platform.python_version(), 'cpu_count': os.cpu_count(),
           'torch_threads': torch.get_num_threads()}
    if hasattr(os, 'getloadavg'):
        env['load_average_1min_at_end'] = os.getloadavg()[0]
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(  # a usage error is one line, exit status 2
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='ogbg-molhiv', choices=list(PROTOCOLS))
    p.add_argument('--backbone', default=None,
                   help="GIN, GIN-v, GCN, GCN-v, ... (default: the "
                   "protocol's)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--methods', nargs='+', default=None,
                   choices=list(ALL_METHODS),
                   help='default: all (erm hma with --quick or --seed-batch)')
    p.add_argument('--epoch-methods', nargs='+', default=['erm', 'hma'],
                   choices=list(ALL_METHODS),
                   help='methods timed over whole epochs (default: erm hma)')
    p.add_argument('--paths', nargs='+', default=None, choices=ALL_PATHS,
                   help='pyg, fast (default: both) and static; --seed-batch '
                   'uses the first (default fast)')
    p.add_argument('--pad', default=(256, 512), type=parse_pad_steps,
                   metavar='NODES,EDGES',
                   help='static path: pad batches to multiples of these '
                   'node and edge counts (default 256,512)')
    p.add_argument('--static-mode', default=None, choices=COMPILE_MODES,
                   help='static path: torch.compile mode (default: '
                   'reduce-overhead on CUDA, default on CPU)')
    p.add_argument('--compile', default='none',
                   choices=('none', 'readout', 'model'),
                   help='torch.compile the HMA readout or the whole model '
                   'on the fast path (compiled during the warm-up)')
    p.add_argument('--batch-size', type=int, default=None,
                   help="default: the protocol's (8 with --quick)")
    p.add_argument('--eval-batch-size', type=int, default=None,
                   help='default: --batch-size, as the protocols evaluate')
    p.add_argument('--steps', type=int, default=100,
                   help='timed steps per (path, method)')
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--epochs', type=int, default=1,
                   help='timed epochs per (path, epoch method)')
    p.add_argument('--eval-repeats', type=int, default=3)
    p.add_argument('--memory-steps', type=int, default=5)
    p.add_argument('--max-graphs', type=int, default=None,
                   help='use only the first N train graphs (N/2 val)')
    p.add_argument('--eval-graphs', type=int, default=None,
                   help='evaluate on the first N val graphs (default: all, '
                   'or half of --max-graphs)')
    p.add_argument('--synthetic', action='store_true',
                   help='random graphs with the dataset schema and sizes')
    p.add_argument('--exported', default=None, metavar='DIR',
                   help='read the splits written by `python -m pyg_hma.data '
                   'export` from DIR')
    p.add_argument('--root', default=None, help='dataset cache folder')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1,
                   help="torch CPU threads (default 1, as the runners; 0 "
                   "keeps torch's default)")
    p.add_argument('--quick', action='store_true',
                   help='a few steps on a small subset (seconds; for CI)')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--breakdown', action='store_true',
                      help='time the parts of an ERM and an HMA step')
    mode.add_argument('--profile', default=None, choices=list(ALL_METHODS),
                      help='print a torch.profiler table for this method')
    mode.add_argument('--seed-batch', type=int, default=None, metavar='N',
                      help='time groups of S = 1, 4, N seeds trained as one '
                      'model against S sequential runs')
    p.add_argument('--out', default=None,
                   help="write the JSON report into this folder (as "
                   "speed-DATASET-BACKBONE.json, seed_batch-... with "
                   "--seed-batch), like every runner's --out; a path ending "
                   "in .json is written as given")
    args = p.parse_args(argv)
    if args.threads < 0:
        p.error(f'--threads must be at least 0, got {args.threads}')
    if args.seed_batch is not None and args.seed_batch < 1:
        p.error(f'--seed-batch must be at least 1, got {args.seed_batch}')
    protocol = PROTOCOLS[args.dataset]
    args.backbone = (args.backbone or protocol.backbone).lower()
    if args.backbone not in BACKBONES:  # before any data is loaded
        p.error(f"--backbone: unknown backbone '{args.backbone}'; choose one "
                f"of {', '.join(BACKBONES)}")
    if args.out:
        out = Path(args.out)
        if out.suffix != '.json':
            if out.exists() and not out.is_dir():
                p.error(f'--out {out} is a file; give a folder or a .json '
                        f'path')
            kind = 'seed_batch' if args.seed_batch else 'speed'
            out = out / f'{kind}-{args.dataset}-{args.backbone}.json'
        elif out.is_dir():
            p.error(f'--out {out} is a folder named .json; give another name')
        problem = folder_problem(out.parent)
        if problem:
            p.error(f'--out {args.out} cannot be used ({problem}); choose a '
                    f'writable folder')
        args.out = out
    args.device = torch.device(args.device)
    if args.static_mode is None:
        args.static_mode = ('reduce-overhead' if args.device.type == 'cuda'
                            else 'default')
    if args.paths is None:
        args.paths = ['fast'] if args.seed_batch else ['pyg', 'fast']
    if args.seed_batch and len(args.paths) > 1:
        p.error('--seed-batch times one path; give one of --paths pyg, '
                'fast or static')
    if args.methods is None:
        args.methods = (['erm', 'hma'] if args.quick or args.seed_batch
                        else list(ALL_METHODS))
    if args.quick:
        args.batch_size = args.batch_size or 8
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
        args.eval_repeats, args.memory_steps = 1, 1
        args.max_graphs = min(args.max_graphs or 4 * args.batch_size,
                              4 * args.batch_size)
    args.batch_size = args.batch_size or protocol.train.batch_size
    if args.seed_batch:  # every seed of the largest group gets its batches
        args.max_graphs = args.max_graphs and max(args.max_graphs,
                                                  2 * args.batch_size)
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    if 'erm' not in args.methods and not args.seed_batch:
        args.methods = ['erm'] + args.methods  # the ratios need it
    args.epoch_methods = [m for m in args.epoch_methods if m in args.methods]
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def setup(args, report: dict) -> Bench:
    protocol = PROTOCOLS[args.dataset]
    t0 = time.perf_counter()
    splits = load_splits(args)
    cfg = replace(protocol.train, batch_size=args.batch_size,
                  eval_batch_size=args.eval_batch_size)
    report.update(
        dataset=splits.name, data_source=splits.info['source'],
        backbone=args.backbone, backbone_kwargs=protocol.backbone_kwargs,
        hma_kwargs=protocol.hma, momentum=protocol.momentum,
        train=cfg.to_dict(), train_graphs=len(splits.train),
        val_graphs=len(splits.val), batch_size=cfg.batch_size,
        eval_batch_size=args.eval_batch_size, timed_steps=args.steps,
        warmup_steps=args.warmup, epochs=args.epochs,
        data_load_s=time.perf_counter() - t0)
    return Bench(splits, cfg, args.backbone, protocol, args.device,
                 Loaders(splits.train, cfg.batch_size, True, args.device,
                         args.pad))


class Stopped(KeyboardInterrupt):
    r"""SIGTERM (e.g. from ``timeout``): stop as on Ctrl-C."""


def _stop(signum, frame):
    raise Stopped()


def main(argv=None) -> dict:
    r"""Runs the benchmark; returns its report (also written to ``--out``,
    partial when the run is stopped early: then ``report['stopped']``)."""
    args = parse_args(argv)
    report = {'argv': sys.argv[1:] if argv is None else list(argv),
              'results': {}}
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        bench = setup(args, report)
        if args.breakdown:
            report['breakdown'] = breakdown(args, bench)
        elif args.profile:
            report['profile'] = profile(args, bench)
        elif args.seed_batch:
            time_seed_batches(args, bench, report)
        else:
            time_paths(args, bench, report)
    except KeyboardInterrupt as e:
        report['stopped'] = 'SIGTERM' if isinstance(e, Stopped) else \
            'KeyboardInterrupt'
        print(f"\nstopped ({report['stopped']}): reporting what was "
              f"measured", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        report['environment'] = environment(args.device)
        summarize(report)
        if 'static' in args.paths and report['results']:
            from torch._dynamo.utils import counters
            report['compile_stats'] = {
                'unique_graphs': counters['stats']['unique_graphs'],
                'graph_breaks': dict(counters['graph_break'])}
        if args.out:
            with atomic_path(args.out) as tmp:
                tmp.write_text(json.dumps(report, indent=1, default=str))
            print(f'\nwrote {args.out}')
    if report['results'] and 'dataset' in report:
        print_table(report)
    return report


if __name__ == '__main__':
    sys.exit(1 if main().get('stopped') else 0)
