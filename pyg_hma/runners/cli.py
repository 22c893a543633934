r"""The command line of the benchmark runners: :func:`build_parser` and
:func:`main`, the one place that turns a problem into an exit status."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from ..command_line import OneLineParser
from ..data.mirror import ChecksumError, MissingDataError
from ..files import UnreadableFileError, UnusableFolderError
from ..methods import METHODS
from ..models import BACKBONES
from ..registry import UnknownNameError
from ..train import distributed
from ..train.engine import COMPILE_MODES, EVAL_MODES
from ..loader import LOADER_FACTORIES
from .invocation import run_benchmark
from .outputs import OutputConflictError, OutputInUseError
from .protocol import DatasetProtocol
from .ray_backend import (CONNECT_TIMEOUT_S, LOCAL, RayUnreachableError,
                          RunsFailedError)
from .spec import (DEFAULT_SEED_BATCH, SETTING_SECTIONS, RunSpec,
                   check_names, check_paths, seed_list)


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


def parse_setting(text: str) -> Tuple[str, str, Any]:
    r"""``'hma.memory_size=512'`` -> ``('hma', 'memory_size', 512)``: the
    ``--set`` argument. Values are read as JSON (numbers, ``true``,
    ``null``, ...), anything else as a string."""
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


def build_parser(runner: str, protocols: Mapping[str, DatasetProtocol],
                 description: str = '') -> argparse.ArgumentParser:
    r"""The command line of runner :obj:`runner`; its result becomes a
    :class:`~pyg_hma.runners.spec.RunSpec` with
    :meth:`~pyg_hma.runners.spec.RunSpec.from_args`."""
    p = OneLineParser(
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
                   'backbone class, e.g. backbone.hidden_channels=64), '
                   'hma.NAME (HMAReadout, e.g. hma.heads=2) or method.NAME '
                   '(a method\'s own, e.g. method.penalty_weight=100 for '
                   'IRM and V-REx, method.drop_ratio=0.1 for DropEdge and '
                   'DropNode, method.mixup_alpha=0.2 for M-Mixup); '
                   'repeatable')
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
    p.add_argument('--tensorboard', type=Path, metavar='DIR',
                   help='write per-epoch curves (loss, metrics, lr) of every '
                   'run for TensorBoard under DIR/DATASET/BACKBONE/METHOD/'
                   'seedS (needs pyg_hma[tensorboard])')
    p.add_argument('--ddp', action='store_true',
                   help='train each run on all ranks of a torchrun launch '
                   '(torchrun --nproc-per-node N RUNNER ... --ddp; see '
                   'docs/scaling.md); rank 0 writes')
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
    p.add_argument('--ray-timeout', type=float, metavar='S',
                   help='seconds to wait for the cluster at the --ray '
                   f'address before giving up (default '
                   f'{CONNECT_TIMEOUT_S:g})')
    p.add_argument('--seed-batch', type=int, default=None, metavar='N',
                   help='train up to N seeds of a method as one seed-batched '
                   'model (pyg_hma.train.fit_seeds; every backbone and '
                   'method of the protocols; others fall back to one by '
                   f'one). Default: groups of up to {DEFAULT_SEED_BATCH}, '
                   'on a CPU fewer where large batches would make a group '
                   'slower (pyg_hma.train.seed_batch.seed_group_limit) '
                   '(one run at a time with --ddp, which does not combine '
                   'with it yet; with --pad/--compile the group is padded '
                   'and compiled as one model). --seed-batch 1: one run at '
                   'a time, as before. Seed-batched runs draw dropout from '
                   'per-seed generators, so they are recorded as their own '
                   'configuration')
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
    p.add_argument('--skip-committed', type=Path, metavar='RUNS_CSV',
                   help='skip runs that already have a row of this engine '
                   "version in RUNS_CSV (the study's results/paper/runs.csv): "
                   'a study continues on another machine from its committed '
                   'rows')
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


def main(argv: Optional[Sequence[str]] = None, *, runner: str,
         protocols: Mapping[str, DatasetProtocol],
         description: str = '') -> int:
    r"""The command line of a runner; returns the exit status (2 with one
    line for a problem that is the user's to fix)."""
    parser = build_parser(runner, protocols, description)
    args = parser.parse_args(argv)
    try:  # values, folders, names and settings: before any work
        spec = RunSpec.from_args(args)
        check_paths(spec, runner)
        check_names(spec, protocols)
    except ValueError as e:  # ArgumentError, UnknownNameError too
        parser.fail(e)
    try:
        with distributed.process_group(spec.ddp):
            run_benchmark(spec, runner, protocols)
    except USER_ERRORS as e:
        if spec.debug:
            raise
        print(f'{parser.prog}: error: {e}', file=sys.stderr)
        return 2
    return 0


#: Failures that are the user's to fix (data, output folder): one line and
#: exit status 2 from the command line, a traceback only with --debug.
USER_ERRORS = (MissingDataError, ChecksumError, UnreadableFileError,
               UnusableFolderError, OutputInUseError, OutputConflictError,
               UnknownNameError, RunsFailedError, RayUnreachableError)
