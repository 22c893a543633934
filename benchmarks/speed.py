r"""Training and inference speed of a backbone alone (ERM) and with HMA.

For one dataset, backbone and device, every method (ERM with a linear head,
and HMA with each of its ablations) is timed **in the same run, interleaved**
(one ERM step, one step of each HMA variant, one ERM step, ... after a
warm-up), on two data paths:

* ``pyg``: the standard loop: PyG's ``DataLoader``, ``batch.to(device)``
  every step, ``loss.item()`` every step, OGB's boolean-mask loss, default
  Adam, HMA's input checks on;
* ``fast``: the dataset resident on the device and batched by index
  (:class:`~pyg_hma.data.device_loader.DeviceGraphLoader`), no host
  synchronisation inside a step (losses accumulated on the device, a masked
  loss without boolean indexing, ``HMAReadout(check_inputs=False)``), fused
  Adam (on CPU and CUDA) and ``zero_grad(set_to_none=True)``;
* ``static`` (optional, ``--paths ... static``): the ``fast`` path with every
  batch padded to node and edge counts that are multiples of ``--pad``
  (:class:`~pyg_hma.data.padding.PaddedLoader`) and the whole model
  ``torch.compile``-d with ``--static-mode`` (default ``reduce-overhead``,
  i.e. CUDA graphs, on a GPU; ``default`` on a CPU). Compilation and graph
  recording happen in the warm-up (give it 30+ steps).

Reported per path and method: median milliseconds per training step (data
loading included), seconds per training epoch (whole epochs, also
interleaved), the HMA/ERM ratios, evaluation graphs per second for both HMA
inference modes (``batch`` and ``independent``) and peak memory
(``torch.cuda.max_memory_allocated`` on GPU; on CPU the process RSS
high-water mark, which only grows during a run).

Examples::

    python benchmarks/speed.py --dataset ogbg-molhiv --backbone GIN
    python benchmarks/speed.py --dataset NCI1 --backbone GCN --out nci1.json
    python benchmarks/speed.py --quick --synthetic          # seconds, for CI
    python benchmarks/speed.py --dataset ogbg-molhiv --breakdown   # HMA costs
    python benchmarks/speed.py --dataset NCI1 --profile hma     # profiler table
    python benchmarks/speed.py --dataset NCI1 --compile readout
    python benchmarks/speed.py --export-gpu-data .gpu_data  # for gpu_check.sh

``--synthetic`` generates random graphs with the dataset's feature schema and
size statistics, so the benchmark runs without the datasets.
``--gpu-data DIR`` reads the tensors written by ``--export-gpu-data`` (no ogb
or RDKit needed). ``hma-online-keys`` is a diagnostic row, not a paper method:
full HMA writing the online encoder's detached embeddings into the queue, to
show what the momentum encoder costs. Results and their reading:
``docs/performance.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyg_hma.data.device_loader import DeviceGraphLoader  # noqa: E402
from pyg_hma.data.exported import compact_int  # noqa: E402
from pyg_hma.data.padding import PaddedLoader  # noqa: E402
from pyg_hma.methods import METHODS  # noqa: E402
from pyg_hma.models import build_model  # noqa: E402
from pyg_hma.runners.cli import parse_pad_steps  # noqa: E402
from pyg_hma.train.engine import COMPILE_MODES, compile_model  # noqa: E402
from pyg_hma.models.encoders import (ATOM_FEATURE_DIMS,  # noqa: E402
                                     BOND_FEATURE_DIMS)

HMA_METHODS = METHODS.names(lambda spec: spec.uses_hma)
# Diagnostic, not a paper row: full HMA writing the online encoder's
# (detached) embeddings into the queue instead of a momentum encoder's.
ONLINE_KEYS = 'hma-online-keys'
ALL_METHODS = ('erm', ) + HMA_METHODS + (ONLINE_KEYS, )
PATHS = ('pyg', 'fast')  # the default; 'static' on request
ALL_PATHS = PATHS + ('static', )


# Datasets ####################################################################

@dataclass
class Preset:
    """What a dataset looks like and which model the paper trains on it.

    ``schema`` is ``'ogb'`` (9 integer atom and 3 integer bond features),
    ``'onehot'`` (one-hot node labels) or ``'dense'`` (float features);
    ``avg_nodes``/``edges_per_node`` drive ``--synthetic``.
    """
    schema: str
    num_features: int
    num_classes: int
    train_graphs: int
    val_graphs: int
    avg_nodes: float
    edges_per_node: float  # directed edges per node
    backbone: str
    backbone_kwargs: dict
    hma_kwargs: dict


def _ogb(train, val, nodes, epn):
    return Preset('ogb', 9, 2, train, val, nodes, epn, 'gin',
                  dict(hidden_channels=300, num_layers=5, dropout=0.5,
                       atom_encoder=True, bond_encoder=True),
                  dict(memory_size=256, slots_per_class=8, label_dim=16))


def _ciga(features, classes, train, val, nodes, epn, hidden, hma):
    # As benchmarks/ood.py: TU 32 dims, dropout 0.3; text 128 dims, 0.5.
    schema = 'onehot' if hidden == 32 else 'dense'
    return Preset(schema, features, classes, train, val, nodes, epn, 'gcn',
                  dict(hidden_channels=hidden, num_layers=3,
                       dropout=0.3 if hidden == 32 else 0.5,
                       pooling='mean'), hma)


_DEFAULT_HMA = dict(memory_size=256, slots_per_class=8, label_dim=16)
# Sizes are those of the project's splits (OGB scaffold, TU size shift at the
# 50th node-count percentile, Graph-SST5's train/dev); the HMA settings are
# the published ones (issue 4).
PRESETS: Dict[str, Preset] = {
    'ogbg-molhiv': _ogb(32901, 4113, 25.5, 2.16),
    'ogbg-molbace': _ogb(1210, 151, 34.1, 2.16),
    'ogbg-molbbbp': _ogb(1631, 204, 24.1, 2.16),
    'NCI1': _ciga(37, 2, 1942, 215, 20.8, 2.15, 32, _DEFAULT_HMA),
    'NCI109': _ciga(38, 2, 1872, 207, 29.7, 2.16, 32, _DEFAULT_HMA),
    'PROTEINS': _ciga(3, 2, 511, 56, 39.1, 3.73, 32,
                      dict(memory_size=128, slots_per_class=32,
                           label_dim=16)),
    'DD': _ciga(89, 2, 535, 59, 284.3, 5.03, 32, _DEFAULT_HMA),
    'Graph-SST5': _ciga(384, 5, 5905, 1186, 11.8, 1.83, 128,
                        dict(memory_size=512, slots_per_class=16,
                             label_dim=32)),
    'Graph-Twitter': _ciga(384, 3, 4998, 624, 21.1, 1.9, 128,
                           dict(memory_size=192, slots_per_class=48,
                                label_dim=32)),
}


def synthetic_graphs(preset: Preset, num_graphs: int, seed: int,
                     num_features: Optional[int] = None) -> List[Data]:
    """Random graphs shaped like the dataset: a random tree plus extra edges
    (both directions stored), node counts around the dataset's mean, the
    dataset's feature schema and label format."""
    gen = torch.Generator().manual_seed(seed)
    num_features = num_features or preset.num_features
    extra = max(preset.edges_per_node / 2 - 1, 0.0)  # undirected, beyond tree
    sizes = (torch.poisson(torch.full((num_graphs, ), preset.avg_nodes - 2),
                           generator=gen) + 2).long().tolist()
    graphs = []
    for n in sizes:
        parent = (torch.rand(n - 1, generator=gen) *
                  torch.arange(1, n)).long()
        src, dst = parent, torch.arange(1, n)
        m = int(round(extra * n))
        if m:
            src = torch.cat([src, torch.randint(0, n, (m, ), generator=gen)])
            dst = torch.cat([dst, torch.randint(0, n, (m, ), generator=gen)])
        edge_index = torch.stack([torch.cat([src, dst]),
                                  torch.cat([dst, src])])
        num_edges = edge_index.size(1)
        if preset.schema == 'ogb':
            x = torch.stack([torch.randint(0, d, (n, ), generator=gen)
                             for d in ATOM_FEATURE_DIMS], dim=1)
            edge_attr = torch.stack(
                [torch.randint(0, d, (num_edges, ), generator=gen)
                 for d in BOND_FEATURE_DIMS], dim=1)
            y = torch.randint(0, 2, (1, 1), generator=gen)
            graphs.append(Data(x=x, edge_index=edge_index,
                               edge_attr=edge_attr, y=y))
            continue
        if preset.schema == 'onehot':
            x = F.one_hot(torch.randint(0, num_features, (n, ), generator=gen),
                          num_features).float()
        else:
            x = torch.randn(n, num_features, generator=gen)
        y = torch.randint(0, preset.num_classes, (1, ), generator=gen)
        graphs.append(Data(x=x, edge_index=edge_index, y=y))
    return graphs


@dataclass
class Bench:
    """The data of one benchmark."""
    name: str
    train: object
    val: object
    num_features: int
    num_classes: int
    task: str  # 'bce' (OGB, one logit) or 'ce'
    source: str


def load_bench_data(args, preset: Preset) -> Bench:
    task = 'bce' if preset.schema == 'ogb' else 'ce'
    if args.synthetic:
        train = synthetic_graphs(preset, preset.train_graphs, args.seed)
        val = synthetic_graphs(preset, preset.val_graphs, args.seed + 1)
        return Bench(args.dataset, train, val, preset.num_features,
                     preset.num_classes, task, 'synthetic')
    if args.gpu_data:
        return load_gpu_data(Path(args.gpu_data), args.dataset, preset,
                             args.seed)
    from pyg_hma.data import load_dataset  # imports ogb/RDKit when needed
    splits = load_dataset(args.dataset, root=args.root)
    task = 'bce' if splits.metric == 'rocauc' else 'ce'
    return Bench(args.dataset, splits.train, splits.val, splits.num_features,
                 splits.num_classes, task, 'pyg_hma.data.load_dataset')


# Plain tensor export for the GPU machine (no ogb, RDKit or spaCy there) #####

def _export_split(graphs, features: str) -> dict:
    graphs = [graphs[i] for i in range(len(graphs))]
    out = {
        'num_nodes': torch.tensor([g.num_nodes for g in graphs]),
        'num_edges': torch.tensor([g.edge_index.size(1) for g in graphs]),
        'edge_index': compact_int(torch.cat([g.edge_index for g in graphs], 1)),
        'y': torch.cat([g.y for g in graphs]),
        'features': features,
    }
    x = torch.cat([g.x for g in graphs])
    if features == 'long':
        out['x'] = compact_int(x)
    elif features == 'onehot':
        if not torch.equal(x.sum(1), torch.ones(x.size(0))):
            raise ValueError('one-hot export of features that are not one-hot')
        out['x'] = compact_int(x.argmax(1))
    out['num_features'] = x.size(1)  # 'random': only the size travels
    if graphs[0].edge_attr is not None:
        out['edge_attr'] = compact_int(torch.cat([g.edge_attr for g in graphs]))
    return out


def export_gpu_data(folder: Path, names: List[str], args) -> None:
    """Writes each dataset's train/val graphs as a few flat tensors in the
    smallest integer dtypes. OGB atom/bond features and one-hot node labels
    are exact; dense text features (384 floats per word) would not fit the
    64 MiB carry limit, so only their size is stored and the GPU side draws
    them at random (timing depends on shapes, not values)."""
    folder.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        if name not in PRESETS:
            raise ValueError(f"Cannot export '{name}': choose from "
                             f"{', '.join(PRESETS)}")
        preset = PRESETS[name]
        sub = argparse.Namespace(**{**vars(args), 'dataset': name,
                                    'gpu_data': None})
        try:
            bench = load_bench_data(sub, preset)
        except Exception as e:  # report, export the others
            print(f'{name}: not exported ({type(e).__name__}: {e})',
                  file=sys.stderr)
            failed.append(name)
            continue
        features = {'ogb': 'long', 'onehot': 'onehot',
                    'dense': 'random'}[preset.schema]
        blob = {'name': name, 'task': bench.task, 'source': bench.source,
                'num_features': bench.num_features,
                'num_classes': bench.num_classes,
                'train': _export_split(bench.train, features),
                'val': _export_split(bench.val, features)}
        path = folder / f'{name}.pt'
        tmp = path.with_suffix('.pt.tmp')
        torch.save(blob, tmp)
        os.replace(tmp, path)
        print(f'{path}: {path.stat().st_size / 2**20:.1f} MiB '
              f'({len(bench.train)} train, {len(bench.val)} val graphs, '
              f'{bench.source})')
    if failed:
        raise SystemExit(f"not exported: {', '.join(failed)} (the GPU "
                         f"check uses --synthetic graphs for them)")


def _import_split(split: dict, gen: torch.Generator) -> List[Data]:
    nodes, edges = split['num_nodes'].tolist(), split['num_edges'].tolist()
    num = sum(nodes)
    if split['features'] == 'long':
        x = split['x'].long()
    elif split['features'] == 'onehot':
        x = F.one_hot(split['x'].long(), split['num_features']).float()
    else:
        x = torch.randn(num, split['num_features'], generator=gen)
    xs = x.split(nodes)
    eis = split['edge_index'].long().split(edges, dim=1)
    eas = (split['edge_attr'].long().split(edges)
           if 'edge_attr' in split else [None] * len(nodes))
    ys = split['y'].split(1)
    return [Data(x=a, edge_index=b, edge_attr=c, y=d) if c is not None else
            Data(x=a, edge_index=b, y=d)
            for a, b, c, d in zip(xs, eis, eas, ys)]


def load_gpu_data(folder: Path, name: str, preset: Preset, seed: int) -> Bench:
    path = folder / f'{name}.pt'
    if not path.is_file():
        raise FileNotFoundError(
            f"'{path}' not found: write it with `python benchmarks/speed.py "
            f"--export-gpu-data {folder}` or use --synthetic")
    blob = torch.load(path, weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    source = f"{path} (from {blob['source']})"
    if blob['train']['features'] == 'random':
        source += ', random features'
    return Bench(name, _import_split(blob['train'], gen),
                 _import_split(blob['val'], gen), blob['num_features'],
                 blob['num_classes'], blob['task'], source)


# Models and training steps ##################################################

def build(args, preset: Preset, bench: Bench, method: str, path: str):
    torch.manual_seed(args.seed)  # every method starts from the same backbone
    hma_kwargs = dict(preset.hma_kwargs)
    if path != 'pyg':
        hma_kwargs['check_inputs'] = False
    model = build_model(
        args.backbone, 'hma' if method == ONLINE_KEYS else method,
        num_classes=bench.num_classes, num_features=bench.num_features,
        out_channels=1 if bench.task == 'bce' else None,
        backbone_kwargs=preset.backbone_kwargs,
        hma_kwargs=None if method == 'erm' else hma_kwargs)
    if method == ONLINE_KEYS:
        model.momentum_encoder = None  # the readout then writes x.detach()
    model = model.to(args.device)
    if path == 'fast' and args.compile == 'readout' and method != 'erm':
        # Shapes depend on the batch size only: one graph per batch size.
        model.readout = torch.compile(model.readout, dynamic=False)
    elif path == 'fast' and args.compile == 'model':
        compile_model(model)
    elif path == 'static':
        # Padded batches come in a few shapes: after the first recompile
        # (automatic dynamic shapes) one compiled graph serves them all, and
        # with 'reduce-overhead' one CUDA graph is recorded per shape.
        compile_model(model, args.static_mode)
    if path != 'pyg':
        # One fused kernel per step; also on the CPU, where it is 3-5x
        # faster than the default per-parameter loop (and than foreach).
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, optimizer


def make_step(model, optimizer, task: str, path: str, device,
              clip: Optional[float], record: bool = False) -> Callable:
    """One training step on a batch; returns nothing, so that the ``fast``
    path never waits for the device. With :obj:`record`, every step's loss
    is kept (on the device) in ``step.totals['losses']``."""
    totals = {'loss': torch.zeros((), device=device), 'graphs': 0,
              'losses': []}

    def labels(batch):
        # HMA writes integer labels into its queue; the loss reads floats.
        return batch.y if not batch.y.is_floating_point() else \
            batch.y.long()

    def step_pyg(batch):
        batch = batch.to(device)
        optimizer.zero_grad()
        out = model(batch, y=labels(batch))
        if task == 'bce':  # OGB's example: boolean mask (a host sync)
            y = batch.y.float()
            labelled = y == y
            loss = F.binary_cross_entropy_with_logits(out[labelled],
                                                      y[labelled])
        else:
            loss = F.cross_entropy(out, batch.y.view(-1))
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        totals['loss'] += loss.item() * batch.num_graphs  # the usual logging
        totals['graphs'] += batch.num_graphs

    def step_fast(batch):
        optimizer.zero_grad(set_to_none=True)
        if path == 'static':  # CUDA graphs: a new step reuses output memory
            torch.compiler.cudagraph_mark_step_begin()
        out = model(batch, y=labels(batch))
        if task == 'bce':  # masked mean without data-dependent shapes
            y = batch.y.float()
            labelled = (y == y).float()
            losses = F.binary_cross_entropy_with_logits(
                out, y.nan_to_num(0.0), reduction='none')
            loss = (losses * labelled).sum() / labelled.sum().clamp(min=1.0)
        else:
            loss = F.cross_entropy(out, batch.y.view(-1))
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip,
                                           foreach=True)
        optimizer.step()
        totals['loss'] += loss.detach() * batch.num_graphs
        totals['graphs'] += batch.num_graphs
        if record:
            totals['losses'].append(loss.detach().clone())

    step = step_pyg if path == 'pyg' else step_fast
    step.totals = totals
    return step


_DEVICE_LOADERS: Dict[tuple, tuple] = {}
PAD = (256, 512)  # --pad: node and edge steps of the static path


def make_loader(path: str, graphs, batch_size: int, shuffle: bool, device,
                seed: int, drop_last: bool = False):
    gen = torch.Generator().manual_seed(seed)
    if path == 'static':
        return PaddedLoader(make_loader('fast', graphs, batch_size, shuffle,
                                        device, seed, drop_last), *PAD)
    if path == 'fast':
        # Flattening 33k molecules takes a second or two: build once per
        # split and share the device tensors between the methods' loaders.
        # (The cache holds `graphs` too, so that its id stays unique.)
        key = (id(graphs), batch_size, shuffle, drop_last, str(device))
        if key not in _DEVICE_LOADERS:
            _DEVICE_LOADERS[key] = (graphs, DeviceGraphLoader(
                graphs, batch_size, shuffle=shuffle, drop_last=drop_last,
                device=device))
        loader = copy.copy(_DEVICE_LOADERS[key][1])
        loader.generator = gen
        return loader
    return DataLoader(graphs, batch_size, shuffle=shuffle,
                      drop_last=drop_last, generator=gen)


class Stream:
    """Endless batches of a loader (a new epoch when one ends)."""
    def __init__(self, loader):
        self.loader, self.it = loader, iter(loader)

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


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


def peak_memory_mb(device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == 'darwin' else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@dataclass
class Runner:
    """One (path, method): its model, optimizer, loaders and step."""
    path: str
    method: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: object
    step: Callable
    stream: Stream


def evaluate(runner: Runner, loader, device):
    runner.model.eval()
    outs = []
    with torch.inference_mode():
        for batch in loader:
            if runner.path == 'pyg':
                batch = batch.to(device)
            if runner.path == 'static':
                torch.compiler.cudagraph_mark_step_begin()
            # A copy: with CUDA graphs the next replay reuses the output.
            outs.append(runner.model(batch).clone())
    out = torch.cat(outs)
    runner.model.train()
    return out


def check_equivalence(graphs, batch_size: int, device, num_batches: int):
    """Asserts that the first batches of both paths hold equal tensors
    (same seed, so the same shuffled order), on the benchmark's device."""
    fast = iter(make_loader('fast', graphs, batch_size, True, device, 0))
    pyg = iter(make_loader('pyg', graphs, batch_size, True, device, 0))
    checked = 0
    for _ in range(num_batches):
        a, b = next(fast, None), next(pyg, None)
        if a is None or b is None:
            break
        b = b.to(device)
        for key in b.keys():
            if isinstance(b[key], torch.Tensor) and not torch.equal(a[key],
                                                                    b[key]):
                raise AssertionError(f"DeviceGraphLoader batch differs from "
                                     f"PyG's in '{key}' on {device}")
        if a.num_graphs != b.num_graphs:
            raise AssertionError('num_graphs differs between the loaders')
        checked += 1
    return checked


def median(xs):
    return statistics.median(xs) if xs else float('nan')


def run(args) -> dict:
    preset = args.preset
    t0 = time.perf_counter()
    bench = load_bench_data(args, preset)
    train, val = bench.train, bench.val
    train = first_graphs(train, args.max_graphs)
    eval_graphs = args.eval_graphs or (args.max_graphs // 2
                                       if args.max_graphs else None)
    if eval_graphs:
        val = [val[i] for i in range(min(len(val), eval_graphs))]
    load_s = time.perf_counter() - t0
    device = args.device
    clip = None if bench.task == 'bce' else 1.0  # the protocols of issue 4
    # A last batch of one graph would break BatchNorm in training.
    drop_last = len(train) % args.batch_size == 1
    eval_bs = args.eval_batch_size or args.batch_size

    equivalent = check_equivalence(train, args.batch_size, device, 3) \
        if set(PATHS) <= set(args.paths) else 0

    runners: List[Runner] = []
    eval_loaders = {}
    loader_build_s = {}
    for path in args.paths:
        t = time.perf_counter()
        eval_loaders[path] = make_loader(path, val, eval_bs, False, device,
                                         args.seed)
        loader_build_s[path] = time.perf_counter() - t
        for method in args.methods:
            model, opt = build(args, preset, bench, method, path)
            loader = make_loader(path, train, args.batch_size, True, device,
                                 args.seed, drop_last)
            step = make_step(model, opt, bench.task, path, device, clip)
            runners.append(Runner(path, method, model, opt, loader, step,
                                  Stream(loader)))
    num_steps = len(runners[0].train_loader)

    # 0. The loaders alone: one epoch of batches, moved to the device.
    loader_ms = {}
    for _ in range(2):  # the first pass warms up
        for path in args.paths:
            loader = make_loader(path, train, args.batch_size, True, device,
                                 args.seed, drop_last)

            def drain():
                for batch in loader:
                    if path == 'pyg':
                        batch.to(device)
            loader_ms[path] = timed(drain, device) * 1e3 / len(loader)

    # 1. Steps, interleaved over every (path, method).
    step_s = {(r.path, r.method): [] for r in runners}
    for i in range(args.warmup + args.steps):
        for r in runners:
            dt = timed(lambda: r.step(next(r.stream)), device)
            if i >= args.warmup:
                step_s[(r.path, r.method)].append(dt)
    # Printed as measured, so that a run cut short still reports something.
    print('ms per step: ' + ', '.join(
        f'{p}/{m} {median(s) * 1e3:.2f}' for (p, m), s in step_s.items()),
        flush=True)

    # 2. Whole epochs, interleaved.
    epoch_s = {(r.path, r.method): [] for r in runners}
    epoch_runners = [r for r in runners if r.method in args.epoch_methods]
    for _ in range(args.epochs):
        for r in epoch_runners:
            def epoch():
                for batch in r.train_loader:
                    r.step(batch)
            epoch_s[(r.path, r.method)].append(timed(epoch, device))
            print(f'epoch {r.path}/{r.method}: '
                  f'{epoch_s[(r.path, r.method)][-1]:.2f} s', flush=True)

    # 3. Evaluation throughput for both inference modes, interleaved.
    eval_s = {}
    for _ in range(args.eval_repeats):
        for r in runners:
            modes = ('batch', 'independent') if r.method != 'erm' else \
                ('batch', )
            for mode in modes:
                if r.method != 'erm':
                    r.model.readout.inference = mode
                dt = timed(lambda: evaluate(r, eval_loaders[r.path], device),
                           device)
                eval_s.setdefault((r.path, r.method, mode), []).append(dt)

    # 4. Peak memory, one (path, method) at a time.
    memory = {}
    for r in runners:
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.memory_steps):
            r.step(next(r.stream))
        sync(device)
        memory[(r.path, r.method)] = peak_memory_mb(device)

    # Every step really trained: the accumulated losses are finite.
    for r in runners:
        loss = r.step.totals['loss']
        if not torch.isfinite(torch.as_tensor(loss)).all():
            raise RuntimeError(f'{r.path}/{r.method}: non-finite loss')

    results = {}
    for r in runners:
        key = (r.path, r.method)
        steps_ms = [s * 1e3 for s in step_s[key]]
        res = {
            'step_ms': median(steps_ms),
            'step_ms_min': min(steps_ms) if steps_ms else float('nan'),
            'epoch_s': median(epoch_s[key]) if epoch_s[key] else None,
            'epoch_s_all': epoch_s[key],
            'eval_graphs_per_s': {
                mode: len(val) / median(eval_s[(r.path, r.method, mode)])
                for mode in ('batch', 'independent')
                if (r.path, r.method, mode) in eval_s},
            'peak_memory_mb': memory[key],
            'params': sum(p.numel() for p in r.model.parameters()
                          if p.requires_grad),
            'loader_ms_per_batch': loader_ms[r.path],
        }
        results.setdefault(r.path, {})[r.method] = res
    for path, per_method in results.items():
        erm = per_method.get('erm')
        for method, res in per_method.items():
            if erm is None or method == 'erm':
                continue
            res['step_ratio'] = res['step_ms'] / erm['step_ms']
            if res['epoch_s'] and erm['epoch_s']:
                res['epoch_ratio'] = res['epoch_s'] / erm['epoch_s']
    for path in ('fast', 'static'):
        if 'pyg' in results and path in results:
            for method in results[path]:
                results[path][method]['speedup_vs_pyg'] = (
                    results['pyg'][method]['step_ms'] /
                    results[path][method]['step_ms'])

    return {
        'dataset': bench.name,
        'data_source': bench.source,
        'backbone': args.backbone,
        'backbone_kwargs': preset.backbone_kwargs,
        'hma_kwargs': preset.hma_kwargs,
        'task': bench.task,
        'train_graphs': len(train),
        'val_graphs': len(val),
        'batch_size': args.batch_size,
        'eval_batch_size': eval_bs,
        'steps_per_epoch': num_steps,
        'timed_steps': args.steps,
        'warmup_steps': args.warmup,
        'epochs': args.epochs,
        'data_load_s': load_s,
        'batches_checked_equal': equivalent,
        'device_loader_build_s': loader_build_s.get('fast'),
        'results': results,
        'compile_stats': compile_stats() if 'static' in args.paths else None,
        'environment': environment(device),
    }


def compile_stats() -> dict:
    """What torch.compile did in this process: graphs compiled, and graph
    breaks (each one splits a step into several graphs, and CUDA graphs)."""
    from torch._dynamo.utils import counters
    return {'unique_graphs': counters['stats']['unique_graphs'],
            'graph_breaks': dict(counters['graph_break'])}


def environment(device) -> dict:
    import torch_geometric
    env = {
        'device': str(device),
        'device_name': (torch.cuda.get_device_name(device)
                        if device.type == 'cuda' else platform.processor()
                        or platform.machine()),
        'torch': torch.__version__,
        'torch_geometric': torch_geometric.__version__,
        'python': platform.python_version(),
        'cpu_count': os.cpu_count(),
        'torch_threads': torch.get_num_threads(),
    }
    if hasattr(os, 'getloadavg'):
        env['load_average_1min_at_end'] = os.getloadavg()[0]
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    env['cpu_model'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return env


def print_table(report: dict) -> None:
    env = report['environment']
    print(f"\n{report['dataset']} ({report['data_source']}), backbone "
          f"{report['backbone']}, batch {report['batch_size']}, "
          f"{report['train_graphs']} train graphs "
          f"({report['steps_per_epoch']} steps/epoch), device "
          f"{env['device']} [{env.get('device_name', '')}], torch "
          f"{env['torch']}, PyG {env['torch_geometric']}")
    loaders = ', '.join(f"{path} {per['erm']['loader_ms_per_batch']:.2f}"
                        for path, per in report['results'].items()
                        if 'erm' in per)
    print(f'loader alone, ms per batch: {loaders}')
    mem = 'peak MiB' if env['device'].startswith('cuda') else 'RSS HWM MiB'
    head = (f"{'path':6} {'method':16} {'ms/step':>8} {'x ERM':>6} "
            f"{'s/epoch':>8} {'x ERM':>6} {'eval g/s batch':>15} "
            f"{'indep.':>9} {mem:>12} {'vs pyg':>7}")
    print(head)
    print('-' * len(head))
    for path, per_method in report['results'].items():
        for method, r in per_method.items():
            ev = r['eval_graphs_per_s']
            nan = float('nan')
            epoch = r['epoch_s'] or nan
            epoch_ratio = r.get('epoch_ratio', 1.0 if r['epoch_s'] else nan)
            print(f"{path:6} {method:16} {r['step_ms']:8.2f} "
                  f"{r.get('step_ratio', 1.0):6.3f} "
                  f"{epoch:8.2f} {epoch_ratio:6.3f} "
                  f"{ev.get('batch', float('nan')):15.0f} "
                  f"{ev.get('independent', float('nan')):9.0f} "
                  f"{r['peak_memory_mb']:12.0f} "
                  f"{r.get('speedup_vs_pyg', float('nan')):7.2f}")


# Where the time of an HMA step goes ##########################################

@contextmanager
def _timing_hooks(model, device, times: Dict[str, List[float]]):
    """Times the forward of the HMA parts and the momentum update with
    forward hooks (exact on CPU; on CUDA each hook synchronises)."""
    handles, starts = [], {}
    parts = {'encoder forward': model.encoder,
             'readout forward': getattr(model, 'readout', None)}
    mom = getattr(model, 'momentum_encoder', None)
    readout = parts['readout forward']
    if mom is not None:
        parts['momentum encoder forward'] = mom
    if readout is not None:
        parts['  rma block forward'] = readout.rma_block
        parts['  sma block forward'] = readout.sma_block
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
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    patched = []
    for obj, attr, name in ((mom, 'update', 'momentum update (EMA)'),
                            (readout, 'write', '  queue write')):
        if obj is None:
            continue
        orig = getattr(obj, attr)

        def wrapper(*a, orig=orig, name=name, **k):
            sync(device)
            s = time.perf_counter()
            out = orig(*a, **k)
            sync(device)
            times.setdefault(name, []).append(time.perf_counter() - s)
            return out
        setattr(obj, attr, wrapper)
        patched.append((obj, attr))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for obj, attr in patched:
            delattr(obj, attr)  # back to the class's method


def first_graphs(graphs, limit):
    """The first `limit` graphs (all of them when `limit` is falsy)."""
    if not limit:
        return graphs
    return [graphs[i] for i in range(min(len(graphs), limit))]


def check_static(args, tolerance: float = 5e-3,
                 early_tolerance: float = 1e-3) -> dict:
    """The static path (padded batches, compiled model, CUDA graphs on a GPU)
    trains like the eager fast path: ERM and HMA without dropout (whose
    draws would cover the padding too) from the same initial weights on the
    same batches. The per-step losses must agree within
    :obj:`early_tolerance` (relative) over the first 5 steps, where only
    float rounding separates them (on a CPU they agree to about 1e-5; a
    missed queue write, BatchNorm update or wrong gradient shows as 1e-2),
    and within :obj:`tolerance` over all steps, as Adam and gradient
    clipping slowly amplify rounding (and on a GPU, atomic-add order)
    differences. Raises SystemExit otherwise."""
    preset = args.preset
    no_dropout = replace(
        preset, backbone_kwargs={**preset.backbone_kwargs, 'dropout': 0.0},
        hma_kwargs={**preset.hma_kwargs, 'dropout': 0.0})
    bench = load_bench_data(args, preset)
    train = first_graphs(bench.train, args.max_graphs)
    device = args.device
    clip = None if bench.task == 'bce' else 1.0
    drop_last = len(train) % args.batch_size == 1
    report = {}
    for method in ('erm', 'hma'):
        losses = {}
        for path in ('fast', 'static'):
            model, opt = build(args, no_dropout, bench, method, path)
            step = make_step(model, opt, bench.task, path, device, clip,
                             record=True)
            stream = Stream(make_loader(path, train, args.batch_size, True,
                                        device, args.seed, drop_last))
            for _ in range(args.steps):
                step(next(stream))
            losses[path] = torch.stack(step.totals['losses']).double().cpu()
        diff = ((losses['static'] - losses['fast']).abs()
                / losses['fast'].abs().clamp(min=1e-6))
        report[method] = {'steps': args.steps,
                          'first_step_rel_diff': float(diff[0]),
                          'max_rel_diff_first_5': float(diff[:5].max()),
                          'max_rel_diff': float(diff.max()),
                          'first_losses': losses['fast'][:3].tolist()}
        print(f"{method}: {args.steps} steps, loss relative difference "
              f"static vs fast: first step {float(diff[0]):.2e}, first 5 "
              f"steps {float(diff[:5].max()):.2e}, all {float(diff.max()):.2e}")
    bad = [m for m, r in report.items()
           if not (r['max_rel_diff'] <= tolerance
                   and r['max_rel_diff_first_5'] <= early_tolerance)]
    if bad:
        raise SystemExit(f'static path differs from the fast path for {bad} '
                         f'(tolerances {early_tolerance} over 5 steps, '
                         f'{tolerance} over all)')
    return report


def breakdown(args) -> dict:
    """Median time of every part of an ERM and an HMA step on the fast path,
    the two models' steps interleaved (so machine load hits both alike)."""
    preset = args.preset
    bench = load_bench_data(args, preset)
    train = bench.train
    train = first_graphs(train, args.max_graphs)
    device = args.device
    clip = None if bench.task == 'bce' else 1.0
    runs = {}
    for method in ('erm', 'hma'):
        model, opt = build(args, preset, bench, method, 'fast')
        stream = Stream(make_loader('fast', train, args.batch_size, True,
                                    device, args.seed,
                                    len(train) % args.batch_size == 1))
        runs[method] = (model, make_step(model, opt, bench.task, 'fast',
                                         device, clip), stream)
    times = {m: {} for m in runs}
    totals = {m: [] for m in runs}
    for i in range(args.warmup + args.steps):
        for method, (model, step, stream) in runs.items():
            batch = next(stream)
            if i < args.warmup:
                step(batch)
                continue
            with _timing_hooks(model, device, times[method]):
                totals[method].append(timed(lambda: step(batch), device))
    # The readout's forward + backward alone, on fixed embeddings.
    model = runs['hma'][0]
    h = torch.randn(args.batch_size, model.encoder.out_channels,
                    device=device, requires_grad=True)
    y = torch.randint(0, bench.num_classes, (args.batch_size, ),
                      device=device)
    fb = []
    for i in range(args.warmup + args.steps):
        dt = timed(lambda: model.readout(h, y=y).sum().backward(), device)
        if i >= args.warmup:
            fb.append(dt)
    times['hma']['readout forward+backward (alone)'] = fb
    out = {m: {'step': median(totals[m]) * 1e3,
               **{k: median(v) * 1e3 for k, v in times[m].items()}}
           for m in runs}
    print(f"\nWhere the time goes ({args.dataset}, {args.backbone}, batch "
          f"{args.batch_size}, fast path, {device}), median ms:")
    for method, parts in out.items():
        print(f'  {method}:')
        for name, ms in parts.items():
            print(f'    {name:36} {ms:8.3f}')
    return out


def profile(args, method: str) -> str:
    """torch.profiler table of a few fast-path training steps of `method`."""
    preset = args.preset
    bench = load_bench_data(args, preset)
    train = bench.train
    train = first_graphs(train, args.max_graphs)
    device = args.device
    model, opt = build(args, preset, bench, method, 'fast')
    stream = Stream(make_loader('fast', train, args.batch_size, True, device,
                                args.seed, True))
    step = make_step(model, opt, bench.task, 'fast', device,
                     None if bench.task == 'bce' else 1.0)
    for _ in range(args.warmup):
        step(next(stream))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            step(next(stream))
        sync(device)
    sort = 'self_cuda_time_total' if device.type == 'cuda' else \
        'self_cpu_time_total'
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    print(f'\nProfile of {args.steps} {method} steps:\n{table}')
    return table


# Command line ################################################################

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='ogbg-molhiv', choices=list(PRESETS))
    p.add_argument('--backbone', default=None,
                   help="GIN, GIN-v, GCN, GCN-v (default: the dataset's)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--methods', nargs='+', default=list(ALL_METHODS),
                   choices=list(ALL_METHODS))
    p.add_argument('--epoch-methods', nargs='+', default=['erm', 'hma'],
                   choices=list(ALL_METHODS),
                   help='methods timed over whole epochs (default: erm hma)')
    p.add_argument('--paths', nargs='+', default=list(PATHS),
                   choices=list(ALL_PATHS),
                   help='pyg, fast (default: both) and static')
    p.add_argument('--pad', default=(256, 512), type=parse_pad_steps,
                   metavar='NODES,EDGES',
                   help='static path: pad batches to multiples of these '
                   'node and edge counts (default 256,512)')
    p.add_argument('--static-mode', default=None,
                   choices=COMPILE_MODES,
                   help='static path: torch.compile mode (default: '
                   'reduce-overhead on CUDA, default on CPU)')
    p.add_argument('--batch-size', type=int, default=None,
                   help='default: 32 (8 with --quick)')
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
    p.add_argument('--gpu-data', default=None,
                   help='read the tensors of --export-gpu-data from here')
    p.add_argument('--root', default=None, help='dataset cache folder')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1,
                   help="torch CPU threads (default 1, as the runners: small "
                   "graph batches run faster single-threaded, and much "
                   "faster on a shared machine; 0 keeps torch's default)")
    p.add_argument('--compile', default='none',
                   choices=('none', 'readout', 'model'),
                   help='torch.compile the HMA readout or the whole model '
                   'on the fast path (compiled during the warm-up)')
    p.add_argument('--quick', action='store_true',
                   help='a few steps on a small subset (seconds; for CI)')
    p.add_argument('--breakdown', action='store_true',
                   help='time the parts of an ERM and an HMA step instead')
    p.add_argument('--check-static', action='store_true',
                   help='check that the static path trains like the fast '
                   'path (no dropout, same batches; --steps steps) and exit')
    p.add_argument('--profile', default=None, choices=list(ALL_METHODS),
                   help='print a torch.profiler table for this method')
    p.add_argument('--export-gpu-data', default=None, metavar='DIR',
                   help='write ogbg-molhiv, NCI1 and Graph-SST5 (or '
                   '--dataset with --export-datasets) as tensors and exit')
    p.add_argument('--export-datasets', nargs='+',
                   default=['ogbg-molhiv', 'NCI1', 'Graph-SST5'])
    p.add_argument('--out', default=None,
                   help='write the JSON report into this folder (as '
                   'speed-DATASET-BACKBONE.json), like every runner\'s --out; '
                   'a path ending in .json is written as given')
    args = p.parse_args(argv)
    if args.threads < 0:
        p.error(f'--threads must be at least 0, got {args.threads}')
    if args.out:
        out = Path(args.out)
        if out.suffix != '.json':
            if out.exists() and not out.is_dir():
                p.error(f'--out {out} is a file; give a folder or a .json '
                        f'path')
            backbone = args.backbone or PRESETS[args.dataset].backbone
            out = out / f'speed-{args.dataset}-{backbone.lower()}.json'
        elif out.is_dir():
            p.error(f'--out {out} is a folder named .json; give another '
                    f'name')
        args.out = out
    args.device = torch.device(args.device)
    global PAD
    PAD = args.pad
    if args.static_mode is None:
        args.static_mode = ('reduce-overhead' if args.device.type == 'cuda'
                            else 'default')
    if args.threads:
        torch.set_num_threads(args.threads)
    args.preset = preset = PRESETS[args.dataset]
    args.backbone = (args.backbone or preset.backbone).lower()
    if args.quick:
        args.batch_size = args.batch_size or 8
        args.steps = min(args.steps, 2)
        args.warmup = min(args.warmup, 1)
        args.eval_repeats = 1
        args.memory_steps = 1
        args.max_graphs = min(args.max_graphs or 4 * args.batch_size,
                              4 * args.batch_size)
    args.batch_size = args.batch_size or 32
    if args.synthetic and args.max_graphs:  # generate only what is used
        args.preset = replace(
            preset, train_graphs=min(preset.train_graphs, args.max_graphs),
            val_graphs=min(preset.val_graphs, args.max_graphs // 2))
    if 'erm' not in args.methods:
        args.methods = ['erm'] + args.methods  # ratios need it
    args.epoch_methods = [m for m in args.epoch_methods if m in args.methods]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    _DEVICE_LOADERS.clear()
    if args.export_gpu_data:
        export_gpu_data(Path(args.export_gpu_data), args.export_datasets,
                        args)
        return {}
    if args.check_static:
        report = {'check_static': check_static(args)}
    elif args.breakdown:
        report = {'breakdown': breakdown(args)}
    elif args.profile:
        report = {'profile': profile(args, args.profile)}
    else:
        report = run(args)
        print_table(report)
    report['argv'] = sys.argv[1:] if argv is None else list(argv)
    if args.out:
        from pyg_hma.files import atomic_path
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1, default=str))
        print(f'\nwrote {args.out}')
    return report


if __name__ == '__main__':
    main()
