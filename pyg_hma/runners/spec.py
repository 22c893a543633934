r"""What one runner invocation is asked to do: :class:`RunSpec`, built once
from the parsed command line, and the checks made before any work."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..methods import METHODS, hyperparameter_names, method_hyperparameters
from ..models import BACKBONES
from ..files import folder_problem
from ..nn import HMAReadout
from ..registry import UnknownNameError
from ..train import distributed
from ..train.curves import tensorboard_available
from ..train.engine import TrainConfig, resolve_device
from ..train.results import RunsFileError, read_runs
from .protocol import DatasetProtocol
from .ray_backend import ray_problem
from .setting_checks import check_readout, check_setting_values

#: The sections of ``--set SECTION.NAME=VALUE``.
SETTING_SECTIONS = ('train', 'backbone', 'hma', 'method')

#: Seeds per seed-batched model when ``--seed-batch`` is not given (a cell's
#: 5-10 seeds in one group: docs/performance.md measures S = 1, 4, 10).
DEFAULT_SEED_BATCH = 10
# HMAReadout arguments a setting may not change: the data and the method
# name decide them.
_FIXED_HMA_ARGS = ('in_channels', 'num_classes', 'out_channels', 'rma', 'abd',
                   'synthetic', 'check_inputs')

# --option -> (section, argument): shortcuts for the swept hyperparameters
# and the TrainConfig fields with options of their own.
_NAMED_SETTINGS = {
    'memory_size': ('hma', 'memory_size'),
    'slots_per_class': ('hma', 'slots_per_class'),
    'label_dim': ('hma', 'label_dim'),
    'dropout': ('backbone', 'dropout'),
    'epochs': ('train', 'epochs'),
    'batch_size': ('train', 'batch_size'),
    'lr': ('train', 'lr'),
    'eval_mode': ('train', 'eval_mode'),
}

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


class ArgumentError(ValueError):
    r"""A problem with the command line, seen before any work: one line
    naming the option and the remedy."""


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


@dataclass(frozen=True)
class RunSpec:
    r"""One runner invocation, as the command line gives it (see the
    runners' ``--help`` for every field); ``None`` means the protocol's.

    Args:
        datasets: the datasets (names of the runner's protocols).
        methods: the methods (``'all'``: the paper table's).
        backbones: the backbones.
        pooling: the GNN's global pooling.
        seeds: the seeds.
        settings: the hyperparameters given, by section of
            :data:`SETTING_SECTIONS` (``--set`` and the options that set
            one, such as ``--lr``, ``--patience`` or ``--memory-size``).
        momentum: HMA's key-encoder momentum when :obj:`momentum_given`.
        momentum_given: whether ``--momentum`` was given.
        seed_batch: seeds per seed-batched model (1: one run at a time;
            see :func:`resolve_seed_batch` for the default).
        seed_batch_given: whether ``--seed-batch`` was given.
        out: the output folder (see :func:`output_root`).
        ray: the ``--ray`` address (:data:`~pyg_hma.runners.ray_backend.LOCAL`:
            a local cluster); ``None``: no Ray.
        ray_timeout: seconds to wait for the cluster at :obj:`ray`
            (``None``: :data:`~pyg_hma.runners.ray_backend.CONNECT_TIMEOUT_S`).
    """
    datasets: Tuple[str, ...]
    methods: Optional[Tuple[str, ...]] = None
    backbones: Optional[Tuple[str, ...]] = None
    pooling: Optional[str] = None
    seeds: Optional[Tuple[int, ...]] = None
    settings: Dict[str, Dict[str, Any]] = field(
        default_factory=lambda: {s: {} for s in SETTING_SECTIONS})
    momentum: Optional[float] = None
    momentum_given: bool = False
    compare_evals: bool = False
    save_model: bool = False
    device: str = 'auto'
    threads: int = 1
    loader: str = 'device'
    pad: Optional[Tuple[int, int]] = None
    compile: Optional[str] = None
    jobs: int = 1
    tensorboard: Optional[Path] = None
    seed_batch: int = 1
    seed_batch_given: bool = True
    ddp: bool = False
    ray: Optional[str] = None
    ray_cpus_per_run: Optional[float] = None
    ray_gpus_per_run: Optional[float] = None
    ray_timeout: Optional[float] = None
    out: Optional[Path] = None
    root: Optional[str] = None
    mirror: Optional[str] = None
    exported: Optional[str] = None
    quick: bool = False
    resume: bool = False
    skip_committed: Optional[Path] = None
    force: bool = False
    debug: bool = False
    keep_checkpoints: bool = False
    no_checkpoints: bool = False
    quiet: bool = False
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> 'RunSpec':
        r"""The specification of the runners' parsed command line
        (:func:`~pyg_hma.runners.cli.build_parser`). Raises
        :class:`ArgumentError` for a value no run can take (a count below
        its minimum, a learning rate that is no positive number, ...)."""
        options = vars(args)
        _check_values(options)
        settings: Dict[str, Dict[str, Any]] = {s: {} for s in
                                               SETTING_SECTIONS}
        for option, (section, name) in _NAMED_SETTINGS.items():
            if options[option] is not None:
                settings[section][name] = options[option]
        if args.patience is not None:
            settings['train']['patience'] = args.patience or None
        for section, name, value in args.set or []:
            settings[section][name] = value
        # The options that need no conversion, by the same name.
        given = {f.name: options[f.name] for f in dataclasses.fields(cls)
                 if f.name in options and f.name not in _CONVERTED}
        given['seed_batch'], given['seed_batch_given'] = resolve_seed_batch(
            options)
        return cls(
            **given, datasets=tuple(args.dataset),
            methods=_tuple(args.method), backbones=_tuple(args.backbone),
            seeds=_tuple(args.seeds), settings=settings,
            momentum=options.get('momentum'),
            momentum_given='momentum' in options)


_CONVERTED = ('seeds', 'momentum', 'seed_batch_given')


def resolve_seed_batch(options: Mapping[str, Any]) -> Tuple[int, bool]:
    r"""``(seeds per training group, whether --seed-batch was given)``:
    the option's value, or by default groups of up to
    :data:`DEFAULT_SEED_BATCH` seeds, except with ``--ddp``, which trains
    one run at a time."""
    given = options.get('seed_batch')
    if given is not None:
        return given, True
    if options.get('ddp'):
        return 1, False
    return DEFAULT_SEED_BATCH, False


def _tuple(values: Optional[Sequence]) -> Optional[tuple]:
    return tuple(values) if values is not None else None


def _check_values(options: Mapping[str, Any]):
    for option, low, what in _POSITIVE:
        value = options[option]
        if value is not None and value < low:
            raise ArgumentError(
                f"--{option.replace('_', '-')} must be at least {low} "
                f"({what}), got {value}")
    lr = options['lr']
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ArgumentError(f'--lr must be a positive number, got {lr}')
    problem = ray_problem(options)
    if problem:
        raise ArgumentError(problem)
    if options.get('ddp') and distributed.check_arguments(options):
        raise ArgumentError(distributed.check_arguments(options))
    dropout = options['dropout']
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ArgumentError(f'--dropout must lie in [0, 1), got {dropout}')


def output_root(spec: RunSpec, runner: str) -> Path:
    r"""``--out``, or ``results/RUNNER`` (``results/quick/RUNNER``)."""
    return spec.out or Path('results') / (
        f'quick/{runner}' if spec.quick else runner)


def check_paths(spec: RunSpec, runner: str):
    r"""Raises :class:`ArgumentError` for the first folder that cannot be
    used (``--out``, ``--root``, ``--tensorboard``, ``--mirror``,
    ``--exported``) or a device that is not there. Creates and changes
    nothing."""
    out = output_root(spec, runner)
    if out.exists() and not out.is_dir():
        raise ArgumentError(
            f"--out {out} is a file; give a folder (results go to "
            f"OUT/DATASET/BACKBONE/METHOD/seedS.json)")
    problem = folder_problem(out)
    if problem:
        raise ArgumentError(
            f'--out {out} cannot be used ({problem}); choose a writable '
            f'folder')
    if spec.root is not None:
        root = Path(spec.root).expanduser()
        if root.exists() and not root.is_dir():
            raise ArgumentError(
                f'--root {root} is a file; give the dataset cache folder')
        problem = folder_problem(root)
        if problem:
            raise ArgumentError(f'--root {root} cannot be used ({problem}); '
                                f'choose a writable folder')
    if spec.skip_committed is not None:
        if not Path(spec.skip_committed).is_file():
            raise ArgumentError(
                f'--skip-committed {spec.skip_committed} is not a file; give '
                f'the committed rows (results/paper/runs.csv)')
        try:
            read_runs(spec.skip_committed)
        except RunsFileError as e:
            raise ArgumentError(f'--skip-committed: {e}') from None
    if spec.tensorboard is not None:
        if not tensorboard_available():
            raise ArgumentError("--tensorboard needs the tensorboard "
                                "package: pip install 'pyg_hma[tensorboard]'")
        problem = folder_problem(spec.tensorboard)
        if problem:
            raise ArgumentError(f'--tensorboard {spec.tensorboard} cannot be '
                                f'used ({problem}); choose a writable folder')
    for option, value in (('mirror', spec.mirror),
                          ('exported', spec.exported)):
        if value is not None and not Path(value).expanduser().is_dir():
            raise ArgumentError(
                f'--{option} {value} is not a folder; point it at an '
                f'existing folder (see docs/datasets.md)')
    if spec.ray is not None:
        return  # the device is the workers' (checked with the Ray options)
    try:
        resolve_device(spec.device)
    except (RuntimeError, ValueError) as e:
        raise ArgumentError(f'--device {spec.device}: {e}') from None


def check_names(spec: RunSpec, protocols: Mapping[str, DatasetProtocol]):
    r"""Raises :class:`~pyg_hma.registry.UnknownNameError` for an unknown
    dataset, method or backbone, and :class:`ValueError` for a setting that
    nothing reads or a value its class refuses."""
    for name in spec.datasets:
        if name not in protocols:
            raise UnknownNameError(f"unknown dataset '{name}'; choose from "
                                   f"{', '.join(protocols)}")
    METHODS.check([m for m in spec.methods or [] if m != 'all'])
    BACKBONES.check(spec.backbones or [])
    for dataset in spec.datasets:
        proto = protocols[dataset]
        check_settings(spec.settings, spec.backbones or [proto.backbone])
        check_setting_values(spec.settings)
        for backbone in spec.backbones or [proto.backbone]:
            kwargs = dict(proto.backbone_kwargs)
            if spec.quick:
                kwargs.update(proto.quick_settings().get('backbone_kwargs',
                                                         {}))
            if spec.pooling:
                kwargs['pooling'] = spec.pooling
            check_readout({**proto.hma, **spec.settings['hma']},
                          spec.settings['hma'], backbone,
                          {**kwargs, **spec.settings['backbone']})
        try:
            dataclasses.replace(proto.train, **spec.settings['train'])
        except (TypeError, ValueError) as e:
            raise ValueError(f'--set train.*: {e}') from None
        given = {**proto.method_hyperparameters, **spec.settings['method']}
        for method in METHODS:
            try:
                method_hyperparameters(method, given)
            except (TypeError, ValueError) as e:
                raise ValueError(f'--set method.*: {e}') from None


def check_settings(settings: Mapping[str, Mapping[str, Any]],
                   backbones: Sequence[str]):
    r"""Raises :class:`ValueError` naming any setting that nothing reads."""
    valid = {
        'train': set(TrainConfig.__dataclass_fields__),
        'hma': set(inspect.signature(HMAReadout.__init__).parameters)
        - {'self', *_FIXED_HMA_ARGS},
        'method': set(hyperparameter_names()),
    }
    for backbone in backbones:
        if backbone not in BACKBONES:
            continue  # reported by the backbone check
        spec = BACKBONES[backbone]
        valid['backbone'] = (
            set(inspect.signature(spec.cls.__init__).parameters)
            - {'self', 'in_channels', 'input_shape', *spec.fixed})
        for section in SETTING_SECTIONS:
            bad = sorted(set(settings.get(section, {})) - valid[section])
            if bad:
                where = (f'backbone {backbone}' if section == 'backbone'
                         else section)
                raise ValueError(
                    f"--set {section}.{bad[0]}: {where} has no setting "
                    f"'{bad[0]}'; valid: {', '.join(sorted(valid[section]))}")
