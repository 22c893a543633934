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
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..methods import METHODS, method_label
from ..models import BACKBONES, backbone_label, build_model
from ..data.mirror import ChecksumError, MissingDataError
from ..files import UnreadableFileError
from ..registry import UnknownNameError
from .engine import (COMPILE_MODES, EVAL_MODES, TrainConfig,
                     checkpoint_fingerprint, device_name, fingerprint, fit,
                     resolve_device, select_by_eval_mode)
from .outputs import (SUPERSEDED, OutputConflictError, OutputFolder,
                      OutputInUseError, attempt_log, describe_conflicts)
from .ray_backend import (LOCAL, RayRuns, RunsFailedError, ray_problem,
                          run_device)
from ..files import atomic_torch_save
from ..loader import LOADER_FACTORIES, random_subset
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


def seed_list(text: str, start: int = 0) -> List[int]:
    r"""``'10'`` -> ``start .. start+9``; ``'3-6'`` -> 3..6; ``'0,4,7'``
    -> those. Raises :class:`ValueError` for anything else, negative or
    repeated seeds."""
    text = text.strip()
    try:
        if ',' in text:
            seeds = [int(s) for s in text.split(',') if s.strip()]
        elif '-' in text.lstrip('-'):
            lo, hi = text.split('-', 1)
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            seeds = list(range(start, start + int(text)))
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"expects a count (10), a range (3-6) or a list "
                         f"(0,4,7) of non-negative seeds, got '{text}'")
    if len(set(seeds)) != len(seeds):
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ValueError(f"lists seed {twice[0]} more than once ('{text}'); "
                         f"each seed is one run")
    return seeds


def parse_seeds(text: Optional[str]) -> Optional[List[int]]:
    r"""The ``--seeds`` argument (see :func:`seed_list`)."""
    if text is None:
        return None
    try:
        return seed_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'--seeds {e}') from None


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
    p.add_argument('--ray', nargs='?', const=LOCAL, metavar='ADDRESS',
                   help='train every run (every seed group with '
                   '--seed-batch) as a task on a Ray cluster: alone, a '
                   'local cluster on this machine; with an address '
                   '(HOST:PORT, auto) the cluster started there with `ray '
                   'start --head`. Results land as with a local run '
                   "(docs/scaling.md; needs pyg_hma[ray])")
    p.add_argument('--ray-cpus-per-run', type=float, metavar='C',
                   help='CPUs each Ray task asks for (default 1)')
    p.add_argument('--ray-gpus-per-run', type=float, metavar='G',
                   help='GPUs each Ray task asks for (default 0: CPU runs; '
                   '0.25 lets four runs share a card; the runs then train on '
                   'the GPU Ray gives them)')
    p.add_argument('--tensorboard', type=Path, metavar='DIR',
                   help='write per-epoch curves (loss, metrics, lr) of every '
                   'run for TensorBoard under DIR/DATASET/BACKBONE/METHOD/'
                   'seedS (needs pyg_hma[tensorboard])')
    p.add_argument('--seed-batch', type=int, default=1, metavar='N',
                   help='train up to N seeds of a method as one seed-batched '
                   'model (pyg_hma.train.fit_seeds; GCN/GIN with ERM, the '
                   'HMA variants, IRM and V-REx; others fall back to one by '
                   'one). Default 1: one run at a time. Seed-batched runs '
                   'draw dropout from per-seed generators, so they are '
                   'recorded as their own configuration')
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
    p.add_argument('--force', action='store_true',
                   help='move existing results and checkpoints that this '
                   'invocation would replace into OUT/.superseded/TIME/ '
                   '(never deleted) instead of refusing')
    p.add_argument('--debug', action='store_true',
                   help='show the traceback of an error')
    p.add_argument('--keep-checkpoints', action='store_true',
                   help='keep each run\'s last checkpoint')
    p.add_argument('--no-checkpoints', action='store_true',
                   help='write no per-epoch checkpoints (a run cut short '
                   'starts over): for machines whose files do not outlive '
                   'the call, where writing them only costs time')
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


@dataclass
class _Cell:
    r"""One (dataset, backbone) of an invocation: its runs to train, the
    finished runs it keeps, and where its summary goes."""
    folder: Path
    seeds: List[int]
    methods: List[str]
    quick: Optional[Dict[str, Any]]
    jobs: List['_Job'] = field(default_factory=list)
    finished: Dict[Tuple[int, str], dict] = field(default_factory=dict)


def run_benchmark(args: argparse.Namespace, runner: str,
                  protocols: Mapping[str, Protocol]) -> List[dict]:
    r"""Runs everything :obj:`args` asks for; returns the result records.

    Everything is planned first; before anything trains, the output folder
    is locked and checked: an existing result or checkpoint that the
    invocation would replace is refused up front
    (:class:`~pyg_hma.train.outputs.OutputConflictError`), or moved aside
    with ``args.force``."""
    unknown = [d for d in args.dataset if d not in protocols]
    if unknown:
        raise UnknownNameError(f"unknown dataset(s) {unknown}; choose from "
                               f"{', '.join(protocols)}")
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    ray_address = getattr(args, 'ray', None)
    device = (resolve_device(args.device) if ray_address is None
              else run_device(args.device, args.ray_gpus_per_run))
    out_root = output_root(args, runner)
    say = _Printer(args.quiet)
    workers = max(1, getattr(args, 'jobs', 1) or 1)
    settings = settings_of(args)
    for dataset in args.dataset:
        check_settings(settings,
                       args.backbone or [protocols[dataset].backbone])
    cells = _plan(args, runner, protocols, settings, out_root, device,
                  workers, say)

    with OutputFolder(out_root) as output:
        conflicts = [f for cell in cells for job in cell.jobs
                     for f in output.conflicts(
                         job.stem, job.ident, _checkpoint_fingerprints(
                             job, getattr(args, 'compare_evals', False)),
                         args.resume)]
        if conflicts:
            what, listing = describe_conflicts(conflicts, out_root)
            if not getattr(args, 'force', False):
                raise OutputConflictError(
                    f"--out {out_root}: {what} would be replaced ({listing}): "
                    f"finished results of another configuration, or not "
                    f"resumed. Use --resume to keep and continue runs of "
                    f"this configuration, --force to move the others aside "
                    f"(into {out_root / SUPERSEDED}), or another --out",
                    conflicts)
            moved = output.move_aside(conflicts)
            say(f'[{runner}] --force: moved {what} aside into {moved}')
        paper = load_paper()
        all_records: List[dict] = []
        seed_batch = getattr(args, 'seed_batch', 1)
        on_ray = None if ray_address is None else RayRuns(
            [u for cell in cells for u in _units(cell.jobs, seed_batch)],
            _run_group, name_of=_unit_name, on_result=_write_records,
            address=ray_address, cpus_per_run=args.ray_cpus_per_run or 1,
            gpus_per_run=args.ray_gpus_per_run or 0, threads=args.threads,
            quiet=args.quiet, verbose=args.verbose)
        try:
            for cell in cells:
                all_records += _run_cell(cell, workers, args.threads, paper,
                                         say, seed_batch, on_ray)
        finally:
            if on_ray is not None:
                on_ray.close()
    _SPLITS_CACHE.clear()
    return all_records


def output_root(args: argparse.Namespace, runner: str) -> Path:
    r"""``--out``, or ``results/RUNNER`` (``results/quick/RUNNER``)."""
    return args.out or Path('results') / (
        f'quick/{runner}' if args.quick else runner)


def _plan(args, runner, protocols, settings, out_root, device, workers,
          say) -> List[_Cell]:
    r"""The cells of the invocation with their jobs; writes nothing."""
    progress = not args.quiet and sys.stderr.isatty()
    versions = package_versions()
    commit = source_commit()
    cells = []
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
            cell = _Cell(folder=folder, seeds=list(seeds),
                         methods=list(methods), quick=quick)
            for seed in seeds:
                for method in methods:
                    uses_hma = METHODS[method].uses_hma
                    run_id = dict(runner=runner, dataset=dataset,
                                  backbone=backbone, backbone_kwargs=bb_kwargs,
                                  hma=proto.hma if uses_hma else None,
                                  momentum=proto.momentum,
                                  dataset_kwargs=proto.dataset_kwargs,
                                  quick=quick)
                    if getattr(args, 'seed_batch', 1) > 1:
                        # Other dropout draws than a run alone: its own
                        # configuration (never averaged with sequential runs).
                        run_id['seed_batched'] = True
                    ident = fingerprint({'run': run_id, 'method': method,
                                         'seed': seed,
                                         'train': cfg.to_dict()})
                    stem = folder / method / f'seed{seed}'
                    if args.resume:
                        rec = read_result(stem.with_suffix('.json'))
                        if rec is not None and rec.get('run_fingerprint') \
                                == ident:
                            cell.finished[seed, method] = rec
                            say(f'  {method_label(method)} seed {seed}: '
                                f'finished earlier, kept')
                            continue
                    cell.jobs.append(_Job(
                        runner=runner, dataset=dataset, backbone=backbone,
                        bb_kwargs=bb_kwargs, method=method, seed=seed,
                        cfg=cfg, proto=proto, quick=quick, device=device,
                        args=args, stem=stem, run_id=run_id, ident=ident,
                        progress=(progress and workers <= 1
                                  and getattr(args, 'ray', None) is None),
                        meta=dict(runner=runner, table=proto.table,
                                  backbone_label=bb_label,
                                  paper_backbone=paper_bb,
                                  quick=bool(args.quick), versions=versions,
                                  commit=commit)))
            if workers > 1:  # the longer runs first, so none starts last
                cell.jobs.sort(key=lambda job: not METHODS[job.method]
                               .uses_hma)
            cells.append(cell)
    return cells


def _run_cell(cell: _Cell, workers: int, threads: int, paper, say,
              seed_batch: int = 1, on_ray: Optional[RayRuns] = None
              ) -> List[dict]:
    for job, rec in _execute(_units(cell.jobs, seed_batch), workers,
                             threads, on_ray):
        cell.finished[job.seed, job.method] = rec
        say(f"  {method_label(job.method)} seed {job.seed}: val "
            f"{rec['val']:.4f} {rec['primary_test']} "
            f"{rec['test'][rec['primary_test']]:.4f} (best epoch "
            f"{rec['selected_epoch']} of {rec['epochs_run']}, "
            f"{rec['wall_time_s']:.0f} s)")
    # Seed-major order whatever order the runs finished in.
    records = [cell.finished[seed, method] for seed in cell.seeds
               for method in cell.methods]
    md = write_summary(cell.folder, records, paper)
    print(md + (f'\n{QUICK_NOTE}\n' if cell.quick else ''), flush=True)
    return records


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
    splits = _splits_for(job)
    model_fn, built = _model_for(job, splits)
    job.stem.parent.mkdir(parents=True, exist_ok=True)
    curves = _curves(job)
    start = time.perf_counter()
    try:
        res = _fit_job(job, splits, model_fn, curves)
    finally:
        for c in curves:
            c.close()
    return _finish(job, splits, res, built, time.perf_counter() - start)


def _curves(job: _Job) -> list:
    """The run's TensorBoard writer (``--tensorboard``), if asked for:
    ``DIR/DATASET/BACKBONE/METHOD/seedS``."""
    root = getattr(job.args, 'tensorboard', None)
    if root is None:
        return []
    from .curves import TensorBoardCurves
    where = Path(*job.stem.parts[-4:])
    return [TensorBoardCurves(Path(root) / where)]


def _checkpoint_path(job: _Job) -> Optional[Path]:
    if getattr(job.args, 'no_checkpoints', False):
        return None
    return job.stem.with_suffix('.ckpt')


def _fit_job(job: _Job, splits, model_fn, curves):
    return fit(model_fn, splits, job.method, job.cfg, seed=job.seed,
              device=job.device, loader=job.args.loader,
              pad=getattr(job.args, 'pad', None),
              compile=getattr(job.args, 'compile', None),
              checkpoint=_checkpoint_path(job),  # settled up front
              resume=job.args.resume, run_id=job.run_id,
              progress=job.progress, verbose=job.args.verbose,
              log_file=attempt_log(job.stem),  # a new log per attempt
              compare_eval_modes=getattr(job.args, 'compare_evals', False),
              callbacks=curves)


def _run_group(jobs: Sequence[_Job]) -> List[Tuple[_Job, dict]]:
    r"""Trains the runs of :obj:`jobs` (one method, several seeds) as one
    seed-batched model (:func:`~pyg_hma.train.seed_batch.fit_seeds`);
    writes and returns their records."""
    if len(jobs) == 1:
        return [(jobs[0], _run_job(jobs[0]))]
    job = jobs[0]
    splits = [_splits_for(j) for j in jobs]
    model_fn, built = _model_for(job, splits[0])
    job.stem.parent.mkdir(parents=True, exist_ok=True)
    curves = {j.seed: _curves(j) for j in jobs}
    start = time.perf_counter()
    try:
        results = _fit_group(jobs, splits, model_fn, curves)
    finally:
        for cs in curves.values():
            for c in cs:
                c.close()
    seconds = (time.perf_counter() - start) / len(jobs)
    return [(j, _finish(j, s, res, built, seconds))
            for j, s, res in zip(jobs, splits, results)]


def _fit_group(jobs, splits, model_fn, curves):
    from .seed_batch import fit_seeds
    job = jobs[0]

    def to_curves(seed, epoch, rec):
        for c in curves[seed]:
            c(epoch, rec)
    checkpoint = _checkpoint_path(job)
    return fit_seeds(
        model_fn, splits, job.method, job.cfg, seeds=[j.seed for j in jobs],
        device=job.device, loader=job.args.loader,
        checkpoint_dir=checkpoint.parent if checkpoint else None,
        log_dir=job.stem.parent,
        resume=job.args.resume, run_id=job.run_id,
        verbose=job.args.verbose,
        compare_eval_modes=getattr(job.args, 'compare_evals', False),
        callbacks=[to_curves])


def _model_for(job: _Job, splits):
    r"""``(model_fn, what it builds)`` of a run on :obj:`splits`."""
    num_tasks = _num_tasks(splits)
    if job.cfg.loss == 'ce' and num_tasks != 1:
        raise ValueError(f'{job.dataset}: cross entropy needs one label per '
                         f'sample, found {num_tasks}')
    if METHODS[job.method].uses_hma and num_tasks != 1:
        raise ValueError(f'{job.dataset} has {num_tasks} tasks per sample; '
                         f'HMA supports single-task classification only')
    built = dict(
        out_channels=num_tasks if job.cfg.loss == 'bce' else None,
        input_shape=_input_shape(splits),
        # Validation inside HMAReadout costs device syncs every step; the
        # engine's inputs are well formed.
        hma_kwargs={**job.proto.hma, 'check_inputs': False})

    def model_fn():
        return build_model(job.backbone, job.method,
                           num_classes=splits.num_classes,
                           num_features=splits.num_features,
                           input_shape=built['input_shape'],
                           out_channels=built['out_channels'],
                           backbone_kwargs=job.bb_kwargs,
                           hma_kwargs=built['hma_kwargs'],
                           momentum=job.proto.momentum)
    return model_fn, built


def _finish(job: _Job, splits, res, built: dict, seconds: float) -> dict:
    r"""The record of a finished run, written (atomically) as its JSON; the
    checkpoint goes unless --keep-checkpoints."""
    args, stem = job.args, job.stem
    if getattr(args, 'save_model', False) and res.best_state is not None:
        atomic_torch_save(res.best_state, stem.with_suffix('.model.pt'))
    rec = _record(job, splits, res, built, seconds)
    rec.update(job.meta)
    write_json(stem.with_suffix('.json'), rec)
    ckpt = stem.with_suffix('.ckpt')
    if ckpt.exists() and not args.keep_checkpoints:
        ckpt.unlink()
    return rec


def _init_worker(threads: int):
    if threads and threads > 0:
        torch.set_num_threads(threads)


def _checkpoint_fingerprints(job: '_Job', compare_evals: bool) -> List[str]:
    r"""The checkpoint fingerprints a run of :obj:`job` may have written: a
    seed-batched job's group writes the seed-batched one, or the run's own
    when its model or method fell back to :func:`fit`."""
    from .seed_batch import SEED_BATCH_VERSION
    own = checkpoint_fingerprint(job.method, job.seed, job.cfg, job.run_id,
                                 compare_evals)
    if not job.run_id.get('seed_batched'):
        return [own]
    return [own, checkpoint_fingerprint(job.method, job.seed, job.cfg,
                                        job.run_id, compare_evals,
                                        SEED_BATCH_VERSION)]


def _units(jobs: Sequence[_Job], seed_batch: int) -> List[List[_Job]]:
    r"""The jobs in training units: single runs, or groups of up to
    :obj:`seed_batch` seeds of one method (in seed order)."""
    if seed_batch <= 1:
        return [[job] for job in jobs]
    by_method: Dict[str, List[_Job]] = {}
    for job in jobs:
        by_method.setdefault(job.method, []).append(job)
    return [group[i:i + seed_batch] for group in by_method.values()
            for i in range(0, len(group), seed_batch)]


def _execute(units: Sequence[List[_Job]], workers: int, threads: int,
             on_ray: Optional[RayRuns] = None):
    r"""Yields ``(job, record)`` for every job of every unit: in this
    process one unit after the other, with :obj:`workers` > 1 in that
    many worker processes (``spawn``, so CUDA works in them), or as the
    tasks of :obj:`on_ray` (:mod:`~pyg_hma.train.ray_backend`), in the order
    they finish.

    Every run seeds itself and loads its own split, so a run's numbers do
    not depend on which process trains it or on what ran before it there.
    """
    if on_ray is not None:
        for pairs in on_ray.results(units):
            yield from pairs
        return
    if workers <= 1 or len(units) <= 1:
        for unit in units:
            yield from _run_group(unit)
        return
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(units)),
                                mp_context=mp.get_context('spawn'),
                                initializer=_init_worker,
                                initargs=(threads, )) as pool:
        futures = [pool.submit(_run_group, unit) for unit in units]
        try:
            for future in cf.as_completed(futures):
                yield from future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _unit_name(unit: Sequence[_Job]) -> str:
    r"""``DATASET/BACKBONE/METHOD/seedS`` (``seedS+seedT`` for a seed
    group): a unit's name on Ray."""
    return '/'.join(unit[0].stem.parts[-4:-1]
                    + ('+'.join(job.stem.name for job in unit), ))


def _write_records(pairs: Sequence[Tuple[_Job, dict]]):
    r"""Writes the records a Ray task returned as the runs' JSON files in
    the driver's output folder (the worker's own copy may be elsewhere)."""
    for job, rec in pairs:
        job.stem.parent.mkdir(parents=True, exist_ok=True)
        write_json(job.stem.with_suffix('.json'), rec)


def _record(job: _Job, splits, res, built: dict, seconds: float) -> dict:
    args, cfg, method = job.args, job.cfg, job.method
    uses_hma = METHODS[method].uses_hma
    primary = 'test' if 'test' in res.test else next(iter(res.test))
    by_eval_mode = None
    if res.history and 'by_eval_mode' in res.history[0]:
        at_selected = next(r for r in res.history
                           if r['epoch'] == res.selected_epoch)
        by_eval_mode = select_by_eval_mode(res.history)
        for mode, chosen in by_eval_mode.items():
            chosen['at_run_selection'] = at_selected['by_eval_mode'][mode]
    config = {
        'train': cfg.to_dict(), 'backbone_kwargs': job.bb_kwargs,
        'hma': built['hma_kwargs'] if uses_hma else None,
        'hma_variant': METHODS[method].hma,
        'momentum': job.proto.momentum if uses_hma else None,
        'dataset_kwargs': job.proto.dataset_kwargs, 'loader': args.loader,
        'pad': getattr(args, 'pad', None),
        'compile': getattr(args, 'compile', None),
        'quick': job.run_id['quick'], 'out_channels': built['out_channels'],
        'input_shape': built['input_shape'],
    }
    if job.run_id.get('seed_batched'):
        config['seed_batched'] = True
    return {
        'kind': RESULT_KIND, 'format': RESULT_FORMAT,
        'dataset': job.dataset, 'backbone': job.backbone, 'method': method,
        'method_label': method_label(method), 'seed': job.seed,
        'metric': splits.metric, 'primary_test': primary,
        'eval_mode': cfg.eval_mode,
        'val': res.val, 'test': res.test,
        'by_eval_mode': by_eval_mode,
        'selected_epoch': res.selected_epoch, 'epochs_run': res.epochs_run,
        'stopped_early': res.stopped_early,
        'wall_time_s': res.wall_time_s,
        'process_time_s': seconds,
        'resumed_from_epoch': res.resumed_from,
        'skipped_batches': res.skipped_batches,
        'num_parameters': res.num_parameters,
        'device': str(job.device), 'device_name': device_name(job.device),
        'threads': torch.get_num_threads(),
        'seed_batch': res.extra.get('seed_batch_group'),
        'config': config,
        'run_fingerprint': job.ident,
        'dataset_info': {'sizes': splits.sizes(),
                         'num_features': splits.num_features,
                         'num_classes': splits.num_classes,
                         'protocol': splits.info.get('protocol')},
        'protocol_note': job.proto.note,
        'history': res.history,
        'finished_at': datetime.datetime.now().isoformat(timespec='seconds'),
    }


def main(argv: Optional[Sequence[str]] = None, *, runner: str,
         protocols: Mapping[str, Protocol], description: str = '') -> int:
    r"""The command line of a runner; returns the exit status."""
    parser = build_parser(runner, protocols, description)
    args = parser.parse_args(argv)
    problem = check_arguments(args, runner)
    if problem:
        parser.error(problem)
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
            try:
                dataclasses.replace(protocols[dataset].train,
                                    **settings_of(args)['train'])
            except (TypeError, ValueError) as e:
                raise ValueError(f'--set train.*: {e}') from None
    except ValueError as e:  # UnknownNameError too
        parser.error(str(e))
    try:
        run_benchmark(args, runner, protocols)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f'{parser.prog}: error: {e}', file=sys.stderr)
        return 2
    return 0


#: Failures that are the user's to fix (data, output folder): one line and
#: exit status 2 from the command line, a traceback only with --debug.
USER_ERRORS = (MissingDataError, ChecksumError, UnreadableFileError,
               OutputInUseError, OutputConflictError, UnknownNameError,
               RunsFailedError)

# (option, smallest valid value, what it is)
_POSITIVE = (('epochs', 1, 'a count of epochs'),
             ('batch_size', 2, 'graphs per batch (BatchNorm over graphs '
              'needs two)'),
             ('jobs', 1, 'a count of processes'),
             ('seed_batch', 1, 'seeds per batched model'),
             ('memory_size', 1, "HMA's queue length"),
             ('slots_per_class', 1, 'slots per class'),
             ('label_dim', 1, 'a width'),
             ('patience', 0, 'epochs (0 turns early stopping off)'),
             ('threads', 0, "threads (0 keeps torch's default)"))


def check_arguments(args: argparse.Namespace, runner: str) -> Optional[str]:
    r"""The first problem with :obj:`args` that can be seen before any
    work (numbers, paths, the device), as one line naming the option and
    the remedy; ``None`` when there is none. Creates and changes nothing."""
    import math
    for option, low, what in _POSITIVE:
        value = getattr(args, option, None)
        if value is not None and value < low:
            return (f"--{option.replace('_', '-')} must be at least {low} "
                    f"({what}), got {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        return f'--lr must be a positive number, got {args.lr}'
    if args.seed_batch > 1 and (args.pad or args.compile):
        return ('--seed-batch does not combine with --pad or --compile yet; '
                'drop one of them')
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        return f'--dropout must lie in [0, 1), got {args.dropout}'
    out = output_root(args, runner)
    if out.exists() and not out.is_dir():
        return (f"--out {out} is a file; give a folder (results go to "
                f"OUT/DATASET/BACKBONE/METHOD/seedS.json)")
    if not _writable(out):
        return f'--out {out} cannot be written; choose a writable folder'
    if args.root is not None:
        root = Path(args.root).expanduser()
        if root.exists() and not root.is_dir():
            return f'--root {root} is a file; give the dataset cache folder'
        if not _writable(root):
            return f'--root {root} cannot be written; choose a writable folder'
    if getattr(args, 'tensorboard', None) is not None:
        from .curves import tensorboard_available
        if not tensorboard_available():
            return ("--tensorboard needs the tensorboard package: pip "
                    "install 'pyg_hma[tensorboard]'")
        if (args.tensorboard.exists() and not args.tensorboard.is_dir()) \
                or not _writable(args.tensorboard):
            return (f'--tensorboard {args.tensorboard} cannot be written; '
                    f'choose a writable folder')
    for option in ('mirror', 'exported'):
        value = getattr(args, option, None)
        if value is not None and not Path(value).expanduser().is_dir():
            return (f'--{option} {value} is not a folder; point it at an '
                    f'existing folder (see docs/datasets.md)')
    problem = ray_problem(args)
    if problem or getattr(args, 'ray', None) is not None:
        return problem  # on Ray the device is the workers', not checked here
    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        return f'--device {args.device}: {e}'
    return None


def _writable(path: Path) -> bool:
    r"""Whether :obj:`path` (a folder, maybe not yet there) can be
    created and written, judged from its nearest existing ancestor."""
    path = path.expanduser().absolute()
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
