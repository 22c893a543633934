r"""Protocols and the command line shared by the benchmark runners.

A runner (``benchmarks/ood.py``, ``ogb_mol.py``, ``tu_id.py``) is a table of
:class:`Protocol` objects, one per dataset, and a call to :func:`main`. For
every dataset, backbone, seed and method it trains with
:func:`~pyg_hma.train.engine.fit`, writes one JSON file per run and a
summary (markdown and CSV) per dataset and backbone, and prints the summary.

Layout of the output folder (``--out``)::

    OUT/DATASET/BACKBONE/METHOD/seedS.json   # one finished run
    OUT/DATASET/BACKBONE/METHOD/seedS.log    # its per-epoch log
    OUT/DATASET/BACKBONE/METHOD/seedS.ckpt   # while it runs
                                             # (--keep-checkpoints keeps it)
    OUT/DATASET/BACKBONE/summary.md, summary.csv
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..methods import METHODS, method_label
from ..models import BACKBONES, backbone_label, build_model
from ..registry import UnknownNameError
from .engine import (COMPILE_MODES, EVAL_MODES, TrainConfig, device_name,
                     fingerprint, fit, resolve_device, select_by_eval_mode)
from ..data._io import atomic_torch_save
from .loaders import LOADER_FACTORIES, random_subset
from .results import (RESULT_FORMAT, RESULT_KIND, load_paper,
                      package_versions, read_result, source_commit,
                      write_json, write_summary)


@dataclass
class Protocol:
    r"""The default protocol of one dataset.

    Args:
        train: the optimisation protocol.
        backbone: default backbone (a :obj:`pyg_hma.models.BACKBONES` name).
        table: the paper's table of this dataset (``None``: not in it).
        seeds: default number of seeds (``0 .. seeds-1``).
        methods: methods run when ``--method`` is not given.
        table_methods: the methods of the paper's table (``--method all``).
        backbone_kwargs: backbone arguments (hidden size, layers, ...).
        hma: :class:`~pyg_hma.HMAReadout` arguments (memory size, ...).
        momentum: EMA momentum of HMA's key encoder (``None``: no key
            encoder, the online embeddings are written).
        dataset_kwargs: extra arguments of :func:`pyg_hma.data.load_dataset`.
        quick: ``--quick`` settings: ``epochs``, ``seeds``, ``train_size``,
            ``eval_size`` (subset sizes), ``backbone_kwargs`` (e.g. a smaller
            width) and any :class:`TrainConfig` field.
        note: a sentence on where the protocol comes from.
    """
    train: TrainConfig
    backbone: str
    table: Optional[int] = None
    seeds: int = 10
    methods: Tuple[str, ...] = ('erm', 'hma')
    table_methods: Tuple[str, ...] = ('erm', 'hma')
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    hma: Dict[str, Any] = field(default_factory=dict)
    momentum: Optional[float] = 0.999
    dataset_kwargs: Dict[str, Any] = field(default_factory=dict)
    quick: Dict[str, Any] = field(default_factory=dict)
    note: str = ''

    def replace(self, **changes) -> 'Protocol':
        return dataclasses.replace(self, **changes)


# Long enough to show learning (non-trivial scores) in well under a minute;
# a protocol's `quick` entries override these.
QUICK_DEFAULTS = dict(epochs=8, seeds=2, train_size=256, eval_size=128,
                      lr=1e-2)
QUICK_NOTE = ('(--quick: a smoke test on a data subset for a few epochs; its '
              'scores are not results)')


def parse_seeds(text: Optional[str]) -> Optional[List[int]]:
    r"""``'10'`` -> 0..9; ``'3-6'`` -> 3..6; ``'0,4,7'`` -> those."""
    if text is None:
        return None
    text = text.strip()
    try:
        if ',' in text:
            seeds = [int(s) for s in text.split(',') if s.strip()]
        elif '-' in text.lstrip('-'):
            lo, hi = text.split('-', 1)
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(
            f"--seeds expects a count (10), a range (3-6) or a list (0,4,7) "
            f"of non-negative seeds, got '{text}'")
    return seeds


def _momentum(text: str) -> Optional[float]:
    if text.strip().lower() == 'none':
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"--momentum expects a number in [0, 1] or 'none', got '{text}'")
    return value


def parse_pad_steps(text: str) -> Tuple[int, int]:
    r"""``'128,256'`` -> ``(128, 256)``: the ``--pad`` argument."""
    try:
        nodes, edges = (int(v) for v in text.split(','))
    except ValueError:
        nodes = edges = 0
    if nodes < 1 or edges < 1:
        raise argparse.ArgumentTypeError(
            f"--pad expects two positive integers NODES,EDGES (e.g. 128,256), "
            f"got '{text}'")
    return nodes, edges


SETTING_SECTIONS = ('train', 'backbone', 'hma')
# HMAReadout arguments a setting may not change: the data and the method
# name decide them.
_FIXED_HMA_ARGS = ('in_channels', 'num_classes', 'out_channels', 'rma', 'abd',
                   'synthetic', 'check_inputs')


def parse_setting(text: str) -> Tuple[str, str, Any]:
    r"""``'hma.memory_size=512'`` -> ``('hma', 'memory_size', 512)``: the
    ``--set`` argument. Values are read as JSON (numbers, ``true``,
    ``null``, ...), anything else as a string."""
    import json
    key, sep, raw = text.partition('=')
    section, dot, name = key.strip().partition('.')
    if not sep or not dot or section not in SETTING_SECTIONS or not name:
        raise argparse.ArgumentTypeError(
            f"--set expects SECTION.NAME=VALUE with SECTION one of "
            f"{', '.join(SETTING_SECTIONS)} (e.g. hma.memory_size=512), got "
            f"'{text}'")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw.strip()
    return section, name, value


def settings_of(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    r"""The hyperparameters set on the command line, by section
    (``--set`` and the named shortcuts such as ``--memory-size``)."""
    out: Dict[str, Dict[str, Any]] = {s: {} for s in SETTING_SECTIONS}
    for section, name, value in getattr(args, 'set', None) or []:
        out[section][name] = value
    for option, (section, name) in _NAMED_SETTINGS.items():
        value = getattr(args, option, None)
        if value is not None:
            out[section][name] = value
    return out


# --option -> (section, argument): shortcuts for the swept hyperparameters.
_NAMED_SETTINGS = {
    'memory_size': ('hma', 'memory_size'),
    'slots_per_class': ('hma', 'slots_per_class'),
    'label_dim': ('hma', 'label_dim'),
    'dropout': ('backbone', 'dropout'),
}


def check_settings(settings: Mapping[str, Mapping[str, Any]],
                   backbones: Sequence[str]):
    r"""Raises :class:`ValueError` naming any setting that nothing reads."""
    from ..nn import HMAReadout
    valid = {
        'train': set(TrainConfig.__dataclass_fields__),
        'hma': set(inspect.signature(HMAReadout.__init__).parameters)
        - {'self', *_FIXED_HMA_ARGS},
    }
    for backbone in backbones:
        if backbone not in BACKBONES:
            continue  # reported by _drop_unsupported
        spec = BACKBONES[backbone]
        valid['backbone'] = (
            set(inspect.signature(spec.cls.__init__).parameters)
            - {'self', 'in_channels', 'input_shape', *spec.fixed})
        for section in SETTING_SECTIONS:
            bad = sorted(set(settings[section]) - valid[section])
            if bad:
                where = (f'backbone {backbone}' if section == 'backbone'
                         else section)
                raise ValueError(
                    f"--set {section}.{bad[0]}: {where} has no setting "
                    f"'{bad[0]}'; valid: {', '.join(sorted(valid[section]))}")


def build_parser(runner: str, protocols: Mapping[str, Protocol],
                 description: str = '') -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f'{runner}.py', description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', nargs='+', required=True,
                   metavar='NAME', help=f"one or more of: "
                   f"{', '.join(protocols)}")
    p.add_argument('--method', nargs='+', metavar='NAME',
                   help=f"methods to run (default: the protocol's, e.g. erm "
                   f"hma); 'all' runs the paper table's methods. Choices: "
                   f"{', '.join(METHODS)}")
    p.add_argument('--backbone', nargs='+', metavar='NAME',
                   help=f"backbones (default: the protocol's). Choices: "
                   f"{', '.join(BACKBONES)}")
    p.add_argument('--pooling', choices=('mean', 'max', 'sum'),
                   help="override the GNN's global pooling")
    p.add_argument('--seeds', type=parse_seeds, metavar='N|A-B|A,B,..',
                   help="seeds: a count (seeds 0..N-1), a range or a list "
                   "(default: the protocol's count)")
    p.add_argument('--epochs', type=int, help='maximum epochs')
    p.add_argument('--momentum', type=_momentum, metavar='M|none',
                   default=argparse.SUPPRESS,
                   help="EMA momentum of HMA's key encoder (default: the "
                   "protocol's, 0.999); 'none' writes the online encoder's "
                   "own embeddings into the queue (no key encoder: cheaper, "
                   "not the paper's method)")
    p.add_argument('--batch-size', type=int)
    p.add_argument('--lr', type=float)
    p.add_argument('--patience', type=int,
                   help='early-stopping patience (0 turns it off)')
    p.add_argument('--memory-size', type=int, metavar='M',
                   help="HMA's queue length (default: the protocol's)")
    p.add_argument('--slots-per-class', type=int, metavar='K',
                   help="HMA's synthetic slots per class")
    p.add_argument('--label-dim', type=int, metavar='L',
                   help="HMA's label embedding size")
    p.add_argument('--dropout', type=float, metavar='P',
                   help="the backbone's dropout")
    p.add_argument('--set', type=parse_setting, action='append',
                   metavar='SECTION.NAME=VALUE',
                   help='set any hyperparameter: train.NAME (TrainConfig, '
                   'e.g. train.weight_decay=1e-4), backbone.NAME (the '
                   'backbone class, e.g. backbone.hidden_channels=64) or '
                   'hma.NAME (HMAReadout, e.g. hma.heads=2); repeatable')
    p.add_argument('--eval', dest='eval_mode', choices=EVAL_MODES,
                   help="how validation and test are scored: 'independent' "
                   "(default: a graph's prediction depends on that graph "
                   "alone), 'shuffled' (HMA attends across each eval batch; "
                   "batches in a fixed random order per run) or 'order' "
                   "(across eval batches in dataset order: the paper's "
                   "released code; raw files sorted by label then give "
                   "single-class batches). Only HMA variants with attention "
                   "across datapoints differ")
    p.add_argument('--compare-evals', action='store_true',
                   help='also score every epoch under the other two eval '
                   'modes and record, per mode, the scores of the selected '
                   'epoch and the selection that mode would make '
                   '(by_eval_mode in each JSON)')
    p.add_argument('--save-model', action='store_true',
                   help="save each run's selected model (best validation) as "
                   "seedS.model.pt (a state_dict: torch.load(path, "
                   "weights_only=True))")
    p.add_argument('--device', default='auto',
                   help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument('--threads', type=int, default=1,
                   help='CPU threads of torch (default 1: small graph '
                   'batches run faster single-threaded, and much faster '
                   'when the machine is shared; 0 keeps torch\'s default)')
    p.add_argument('--loader', default='device',
                   choices=list(LOADER_FACTORIES),
                   help="batching: the device-resident loader (device, "
                   "default: the same batches as PyG's DataLoader, gathered "
                   "on the device) or PyG's DataLoader (pyg)")
    p.add_argument('--pad', type=parse_pad_steps, metavar='NODES,EDGES',
                   help='pad every graph batch to node and edge counts that '
                   'are multiples of these (e.g. 128,256): static shapes for '
                   '--compile (default: no padding)')
    p.add_argument('--compile', choices=COMPILE_MODES,
                   help="torch.compile the model: 'reduce-overhead' uses CUDA "
                   "graphs on a GPU (use it with --pad); on a CPU compiling "
                   "did not make these small models faster "
                   "(docs/performance.md)")
    p.add_argument('--jobs', type=int, default=1, metavar='N',
                   help='train N runs (seeds x methods) at once, each in its '
                   'own process with --threads threads (default 1: one '
                   'after the other, in this process). On one GPU the '
                   'processes time-slice the card: 16 jobs on an H100 were '
                   'slow (docs/performance.md); keep N small there')
    p.add_argument('--out', type=Path,
                   help=f'output folder (default results/{runner}, or '
                   f'results/quick/{runner} with --quick)')
    p.add_argument('--root', help='dataset cache folder (default '
                   '$PYG_HMA_ROOT or ~/.cache/pyg_hma)')
    p.add_argument('--mirror', help='offline data mirror (default '
                   '$PYG_HMA_MIRROR or ../shared/data when present)')
    p.add_argument('--exported', metavar='DIR',
                   help='read the splits exported with `python -m '
                   'pyg_hma.data export` from DIR (default $PYG_HMA_EXPORTED; '
                   'for machines without ogb, RDKit or the raw data)')
    p.add_argument('--quick', action='store_true',
                   help='tiny real run for smoke tests: few epochs, a '
                   'subset of the data, 2 seeds')
    p.add_argument('--resume', action='store_true',
                   help='skip finished runs and continue interrupted ones '
                   'from their checkpoints')
    p.add_argument('--keep-checkpoints', action='store_true',
                   help='keep each run\'s last checkpoint')
    p.add_argument('--quiet', action='store_true',
                   help='no progress output (the summary is still printed)')
    p.add_argument('--verbose', action='store_true',
                   help='print every epoch')
    return p


def _drop_unsupported(backbone: str, kwargs: Dict[str, Any]) -> List[str]:
    # A protocol's backbone arguments may not all apply when --backbone picks
    # another family (e.g. `pooling` for the image MLP).
    spec = BACKBONES[backbone]
    accepted = (set(inspect.signature(spec.cls.__init__).parameters)
                - set(spec.fixed))
    dropped = sorted(k for k in kwargs if k not in accepted)
    for key in dropped:
        del kwargs[key]
    return dropped


def _backbone_dir(backbone: str, kwargs: Mapping[str, Any]) -> str:
    pooling = kwargs.get('pooling')
    return f'{backbone}-{pooling}' if pooling in ('max', 'sum') else backbone


def _input_shape(splits) -> Optional[Tuple[int, ...]]:
    if splits.task != 'image':
        return None
    return tuple(int(s) for s in splits.train[0][0].shape)


def _num_tasks(splits) -> int:
    sample = splits.train[0]
    y = sample[1] if isinstance(sample, (tuple, list)) else sample.y
    return int(y.numel())


def _quick_subset(splits, quick: Mapping[str, Any], seed: int):
    tests = {k: random_subset(v, quick['eval_size'], seed)
             for k, v in splits.tests.items()}
    return dataclasses.replace(
        splits, train=random_subset(splits.train, quick['train_size'], seed),
        val=random_subset(splits.val, quick['eval_size'], seed),
        test=tests if isinstance(splits.test, dict) else tests['test'])


class _Printer:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, *lines: str):
        if not self.quiet:
            for line in lines:
                print(line, file=sys.stderr, flush=True)


def run_benchmark(args: argparse.Namespace, runner: str,
                  protocols: Mapping[str, Protocol]) -> List[dict]:
    r"""Runs everything :obj:`args` asks for; returns the result records."""
    unknown = [d for d in args.dataset if d not in protocols]
    if unknown:
        raise UnknownNameError(f"unknown dataset(s) {unknown}; choose from "
                               f"{', '.join(protocols)}")
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out_root = args.out or Path('results') / (
        f'quick/{runner}' if args.quick else runner)
    say = _Printer(args.quiet)
    workers = max(1, getattr(args, 'jobs', 1) or 1)
    progress = not args.quiet and sys.stderr.isatty()
    settings = settings_of(args)
    for dataset in args.dataset:
        check_settings(settings,
                       args.backbone or [protocols[dataset].backbone])
    paper = load_paper()
    versions = package_versions()
    commit = source_commit()
    all_records: List[dict] = []

    for dataset in args.dataset:
        proto = protocols[dataset]
        if hasattr(args, 'momentum'):  # given on the command line
            proto = proto.replace(momentum=args.momentum)
        if settings['hma']:
            proto = proto.replace(hma={**proto.hma, **settings['hma']})
        quick = {**QUICK_DEFAULTS, **proto.quick} if args.quick else None
        methods = args.method or list(proto.methods)
        if 'all' in methods:
            methods = list(proto.table_methods)
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise UnknownNameError(f"unknown method(s) {bad}; choose from "
                                   f"{', '.join(METHODS)} or 'all'")
        train_changes = {k: v for k, v in (quick or {}).items()
                         if k in TrainConfig.__dataclass_fields__}
        for key in ('epochs', 'batch_size', 'lr', 'eval_mode'):
            if getattr(args, key) is not None:
                train_changes[key] = getattr(args, key)
        if args.patience is not None:
            train_changes['patience'] = args.patience or None
        train_changes.update(settings['train'])
        cfg = dataclasses.replace(proto.train, **train_changes)
        seeds = args.seeds or list(range(quick['seeds'] if quick
                                         else proto.seeds))

        for backbone in args.backbone or [proto.backbone]:
            bb_kwargs = dict(proto.backbone_kwargs)
            if quick:
                bb_kwargs.update(quick.get('backbone_kwargs', {}))
            if args.pooling:
                bb_kwargs['pooling'] = args.pooling
            dropped = _drop_unsupported(backbone, bb_kwargs)
            bb_kwargs.update(settings['backbone'])  # checked: all accepted
            if dropped:
                say(f'[{runner}] note: backbone {backbone} takes no '
                    f"{', '.join(dropped)}; the protocol's values are unused")
            folder = out_root / dataset / _backbone_dir(backbone, bb_kwargs)
            bb_label = backbone_label(backbone, bb_kwargs.get('pooling'))
            paper_bb = backbone_label(
                proto.backbone, proto.backbone_kwargs.get('pooling'))
            say(f'[{runner}] {dataset} / {bb_label}: methods '
                f"{', '.join(methods)}; seeds {seeds}; up to {cfg.epochs} "
                f'epochs; device {device}; output {folder}'
                + (f'; {workers} runs at once' if workers > 1 else ''))
            finished: Dict[Tuple[int, str], dict] = {}
            jobs: List[_Job] = []
            for seed in seeds:
                for method in methods:
                    run_id = dict(runner=runner, dataset=dataset,
                                  backbone=backbone, backbone_kwargs=bb_kwargs,
                                  hma=proto.hma
                                  if METHODS[method].uses_hma else None, momentum=proto.momentum,
                                  dataset_kwargs=proto.dataset_kwargs,
                                  quick=quick)
                    ident = fingerprint({'run': run_id, 'method': method,
                                         'seed': seed,
                                         'train': cfg.to_dict()})
                    stem = folder / method / f'seed{seed}'
                    if args.resume:
                        rec = read_result(stem.with_suffix('.json'))
                        if rec is not None and rec.get('run_fingerprint') \
                                == ident:
                            finished[seed, method] = rec
                            say(f'  {method_label(method)} seed {seed}: '
                                f'finished earlier, kept')
                            continue
                    jobs.append(_Job(
                        runner=runner, dataset=dataset, backbone=backbone,
                        bb_kwargs=bb_kwargs, method=method, seed=seed,
                        cfg=cfg, proto=proto, quick=quick, device=device,
                        args=args, stem=stem, run_id=run_id, ident=ident,
                        progress=progress and workers <= 1,
                        meta=dict(runner=runner, table=proto.table,
                                  backbone_label=bb_label,
                                  paper_backbone=paper_bb,
                                  quick=bool(args.quick), versions=versions,
                                  commit=commit)))
            if workers > 1:  # the longer runs first, so none starts last
                jobs.sort(key=lambda job: not METHODS[job.method].uses_hma)
            for job, rec in _execute(jobs, workers, args.threads):
                finished[job.seed, job.method] = rec
                say(f"  {method_label(job.method)} seed {job.seed}: val "
                    f"{rec['val']:.4f} {rec['primary_test']} "
                    f"{rec['test'][rec['primary_test']]:.4f} (best epoch "
                    f"{rec['selected_epoch']} of {rec['epochs_run']}, "
                    f"{rec['wall_time_s']:.0f} s)")
            # Seed-major order whatever order the runs finished in.
            records = [finished[seed, method] for seed in seeds
                       for method in methods]
            md = write_summary(folder, records, paper)
            print(md + (f'\n{QUICK_NOTE}\n' if quick else ''), flush=True)
            all_records += records
    _SPLITS_CACHE.clear()
    return all_records


@dataclass
class _Job:
    r"""One (dataset, backbone, method, seed) run, self-contained so that a
    worker process can run it."""
    runner: str
    dataset: str
    backbone: str
    bb_kwargs: Dict[str, Any]
    method: str
    seed: int
    cfg: TrainConfig
    proto: Protocol
    quick: Optional[Dict[str, Any]]
    device: torch.device
    args: argparse.Namespace
    stem: Path
    run_id: Dict[str, Any]
    ident: str
    progress: bool
    meta: Dict[str, Any]


# A worker (or the main process) loads a split once per (dataset, seed).
_SPLITS_CACHE: Dict[tuple, Any] = {}


def _splits_for(job: _Job):
    from ..data import load_dataset
    exported = getattr(job.args, 'exported', None)
    key = (job.dataset, job.seed, job.args.root, job.args.mirror, exported,
           repr(job.proto.dataset_kwargs), repr(job.quick))
    if key not in _SPLITS_CACHE:
        _SPLITS_CACHE.clear()  # keep one dataset in memory, not all seeds
        splits = load_dataset(job.dataset, root=job.args.root,
                              mirror=job.args.mirror, seed=job.seed,
                              exported=exported, **job.proto.dataset_kwargs)
        if job.quick:
            splits = _quick_subset(splits, job.quick, job.seed)
        _SPLITS_CACHE[key] = splits
    return _SPLITS_CACHE[key]


def _run_job(job: _Job) -> dict:
    r"""Trains one run, writes its JSON (atomically) and returns it."""
    rec = _run_one(_splits_for(job), job.dataset, job.backbone, job.bb_kwargs,
                   job.method, job.seed, job.cfg, job.proto, job.device,
                   job.args, job.stem, job.run_id, job.ident, job.progress)
    rec.update(job.meta)
    write_json(job.stem.with_suffix('.json'), rec)
    ckpt = job.stem.with_suffix('.ckpt')
    if ckpt.exists() and not job.args.keep_checkpoints:
        ckpt.unlink()
    return rec


def _init_worker(threads: int):
    if threads and threads > 0:
        torch.set_num_threads(threads)


def _execute(jobs: Sequence[_Job], workers: int, threads: int):
    r"""Yields ``(job, record)`` for every job: in this process one after
    the other, or with :obj:`workers` > 1 in that many worker processes
    (``spawn``, so CUDA works in them), in the order they finish.

    Every run seeds itself and loads its own split, so a run's numbers do
    not depend on which process trains it or on what ran before it there.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, _run_job(job)
        return
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                mp_context=mp.get_context('spawn'),
                                initializer=_init_worker,
                                initargs=(threads, )) as pool:
        futures = {pool.submit(_run_job, job): job for job in jobs}
        try:
            for future in cf.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _run_one(splits, dataset, backbone, bb_kwargs, method, seed, cfg,
             proto, device, args, stem: Path, run_id, ident, progress
             ) -> dict:
    num_tasks = _num_tasks(splits)
    if cfg.loss == 'ce' and num_tasks != 1:
        raise ValueError(f'{dataset}: cross entropy needs one label per '
                         f'sample, found {num_tasks}')
    uses_hma = METHODS[method].uses_hma
    if uses_hma and num_tasks != 1:
        raise ValueError(f'{dataset} has {num_tasks} tasks per sample; HMA '
                         f'supports single-task classification only')
    out_channels = num_tasks if cfg.loss == 'bce' else None
    input_shape = _input_shape(splits)
    # Validation inside HMAReadout costs device syncs every step; the
    # engine's inputs are well formed.
    hma_kwargs = {**proto.hma, 'check_inputs': False}

    def model_fn():
        return build_model(backbone, method, num_classes=splits.num_classes,
                           num_features=splits.num_features,
                           input_shape=input_shape,
                           out_channels=out_channels,
                           backbone_kwargs=bb_kwargs, hma_kwargs=hma_kwargs,
                           momentum=proto.momentum)

    stem.parent.mkdir(parents=True, exist_ok=True)
    log_file = stem.with_suffix('.log')
    ckpt = stem.with_suffix('.ckpt')
    if not args.resume:
        log_file.unlink(missing_ok=True)
        ckpt.unlink(missing_ok=True)
    start = time.perf_counter()
    res = fit(model_fn, splits, method, cfg, seed=seed, device=device,
              loader=args.loader, pad=getattr(args, 'pad', None),
              compile=getattr(args, 'compile', None), checkpoint=ckpt,
              resume=args.resume,
              run_id=run_id, progress=progress, verbose=args.verbose,
              log_file=log_file,
              compare_eval_modes=getattr(args, 'compare_evals', False))
    primary = 'test' if 'test' in res.test else next(iter(res.test))
    if getattr(args, 'save_model', False) and res.best_state is not None:
        atomic_torch_save(res.best_state, stem.with_suffix('.model.pt'))
    by_eval_mode = None
    if res.history and 'by_eval_mode' in res.history[0]:
        at_selected = next(r for r in res.history
                           if r['epoch'] == res.selected_epoch)
        by_eval_mode = select_by_eval_mode(res.history)
        for mode, chosen in by_eval_mode.items():
            chosen['at_run_selection'] = at_selected['by_eval_mode'][mode]
    return {
        'kind': RESULT_KIND, 'format': RESULT_FORMAT,
        'dataset': dataset, 'backbone': backbone, 'method': method,
        'method_label': method_label(method), 'seed': seed,
        'metric': splits.metric, 'primary_test': primary,
        'eval_mode': cfg.eval_mode,
        'val': res.val, 'test': res.test,
        'by_eval_mode': by_eval_mode,
        'selected_epoch': res.selected_epoch, 'epochs_run': res.epochs_run,
        'stopped_early': res.stopped_early,
        'wall_time_s': res.wall_time_s,
        'process_time_s': time.perf_counter() - start,
        'resumed_from_epoch': res.resumed_from,
        'skipped_batches': res.skipped_batches,
        'num_parameters': res.num_parameters,
        'device': str(device), 'device_name': device_name(device),
        'threads': torch.get_num_threads(),
        'config': {
            'train': cfg.to_dict(), 'backbone_kwargs': bb_kwargs,
            'hma': hma_kwargs if uses_hma else None,
            'hma_variant': METHODS[method].hma,
            'momentum': proto.momentum if uses_hma else None,
            'dataset_kwargs': proto.dataset_kwargs, 'loader': args.loader,
            'pad': getattr(args, 'pad', None),
            'compile': getattr(args, 'compile', None),
            'quick': run_id['quick'], 'out_channels': out_channels,
            'input_shape': input_shape,
        },
        'run_fingerprint': ident,
        'dataset_info': {'sizes': splits.sizes(),
                         'num_features': splits.num_features,
                         'num_classes': splits.num_classes,
                         'protocol': splits.info.get('protocol')},
        'protocol_note': proto.note,
        'history': res.history,
        'finished_at': datetime.datetime.now().isoformat(timespec='seconds'),
    }


def main(argv: Optional[Sequence[str]] = None, *, runner: str,
         protocols: Mapping[str, Protocol], description: str = '') -> int:
    r"""The command line of a runner; returns the exit status."""
    parser = build_parser(runner, protocols, description)
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error('--epochs must be positive')
    if args.jobs < 1:
        parser.error('--jobs must be positive')
    try:  # names and settings, before any work
        for name in args.dataset:
            if name not in protocols:
                raise UnknownNameError(
                    f"unknown dataset '{name}'; choose from "
                    f"{', '.join(protocols)}")
        METHODS.check([m for m in args.method or [] if m != 'all'])
        BACKBONES.check(args.backbone or [])
        for dataset in args.dataset:
            check_settings(settings_of(args),
                           args.backbone or [protocols[dataset].backbone])
    except ValueError as e:  # UnknownNameError too
        parser.error(str(e))
    run_benchmark(args, runner, protocols)
    return 0
