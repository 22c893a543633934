r"""Which code produced a report cell's rows, and the command that
reproduces them.

The code is the ``commit`` column of the cell's rows: one commit, or the
first and last of several in the order of this checkout's history. The
command is rebuilt from the rows (runner, dataset, backbone, methods,
seeds, the configuration's options) and *checked*: the runner plans it
(:func:`pyg_hma.runners.plan.plan`, nothing trains or is written) and its
runs' fingerprints must be the rows' fingerprints. Rows trained one seed
at a time by code from before every run drew its own seed's random
streams (a run alone or in a group of seeds, the same result) carry the
fingerprint of that older identity: the command then says
``--seed-batch 1`` and that their commit trains them (today's code trains
the same configuration with other random streams). A command whose
fingerprints differ otherwise (settings the rows do not record) is given
unchecked, and says so.
"""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..methods import method_label
from ..models import BACKBONES, backbone_label
from ..runners.cli import build_parser
from ..runners.plan import Printer, plan
from ..runners.protocols import runner_protocols
from ..runners.spec import RunSpec
from ..train.engine import fingerprint
from ..train.results import method_rank
from .cells import cell_key
from .sweep_space import seeds_arg

#: Per configuration, the runner options its runs were trained with
#: besides the protocol's (``tuned``: the sweep's best, from its summary).
CONFIG_OPTIONS = {
    'published': [],
    'reference': ['--set', 'hma.style=reference', '--eval', 'order'],
}
#: How a command's runs relate to a cell's rows: today's code trains them;
#: their commit trains them one seed at a time (:func:`_alone_ident`); or
#: not known.
CHECKED, AT_COMMIT, UNCHECKED = 'checked', 'at commit', 'unchecked'
#: The note of a command line that is not :data:`CHECKED`.
STATUS_NOTES = {
    CHECKED: '',
    AT_COMMIT: (" (trained one seed at a time: this command at their commit "
                "trains them; today's code trains the same configuration "
                "with other random streams)"),
    UNCHECKED: ' (unchecked: the current code plans other fingerprints)',
}
#: The sweep's own options, not part of a command that reproduces runs.
_SWEEP_SET = ('--dataset', '--method', '--seeds', '--out', '--resume',
              '--quiet')


def commit_order(folder: Path) -> Dict[str, int]:
    r"""The commits of the history of the checkout holding :obj:`folder`,
    oldest first (empty outside a git checkout)."""
    try:
        log = subprocess.run(['git', '-C', str(folder), 'log', '--format=%H'],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    if log.returncode != 0:
        return {}
    commits = log.stdout.split()[::-1]
    return {c: i for i, c in enumerate(commits)}


def commit_text(commits, order: Mapping[str, int]) -> str:
    r"""``abc1234``; ``abc1234``, ``def5678``; or ``abc1234`` … ``fed9876``
    (N commits), in history order (commits it does not know last)."""
    commits = sorted(set(commits), key=lambda c: (
        order.get(c.split('+')[0], len(order)), c))
    if commits == ['']:
        return 'no commit recorded'
    short = [f'`{c[:7]}{"+dirty" if c.endswith("+dirty") else ""}`'
             if c else '`?`' for c in commits]
    if len(short) <= 2:
        return ', '.join(short)
    return f'{short[0]} … {short[-1]} ({len(short)} commits)'


def _strip_sweep_options(argv: Sequence[str]) -> List[str]:
    r"""A sweep's reproduce command (``python benchmarks/R.py ...``)
    without the script, ``--dataset``, ``--method`` and ``--seeds`` (set
    per cell)."""
    out, skip = [], 0
    for token in list(argv)[2:]:
        if skip:
            skip -= 1
            continue
        if token in _SWEEP_SET:
            skip = 0 if token in ('--resume', '--quiet') else 1
            continue
        out.append(token)
    return out


def _alone_ident(job) -> str:
    r"""The fingerprint :obj:`job`'s run had when trained one seed at a
    time by code before every run drew per-seed random streams (its run
    identity without ``seed_batched``)."""
    run_id = {k: v for k, v in job.run_id.items() if k != 'seed_batched'}
    return fingerprint({'run': run_id, 'method': job.method,
                        'seed': job.seed, 'train': job.train_record})


def _planned(runner: str, protocols, argv: Sequence[str]
             ) -> Optional[Dict[Tuple[str, int], Tuple[str, str]]]:
    r"""``{(method, seed): (fingerprint, fingerprint alone)}`` of the runs
    :obj:`argv` plans (see :func:`_alone_ident`); ``None`` when it is no
    valid command."""
    try:
        args = build_parser(runner, protocols).parse_args(list(argv))
        spec = RunSpec.from_args(args)
        cells = plan(spec, runner, protocols, Path('.'),
                     torch.device('cpu'), Printer(True))
    except (SystemExit, ValueError, KeyError):
        return None
    return {(job.method, job.seed): (job.ident, _alone_ident(job))
            for cell in cells for job in cell.jobs}


def _backbone_options(proto, label: str) -> List[List[str]]:
    pooling = proto.backbone_kwargs.get('pooling')
    if label == backbone_label(proto.backbone, pooling):
        return [[]]
    return [['--backbone', name] for name in BACKBONES
            if backbone_label(name, pooling) == label]


class Cell(dict):
    r"""A cell's runs: ``seeds``, ``fingerprints``, ``commits``, the
    ``variants`` of its rows and its ``engine`` version."""


def cell_runs(rows: Sequence[dict], config: str
              ) -> Dict[tuple, Cell]:
    r"""``{cell_key: Cell}`` (:func:`~.cells.cell_key`) of the rows of
    :obj:`config` (every eval setting)."""
    out: Dict[tuple, Cell] = {}
    for r in rows:
        if r['variant'].split('/', 1)[0] != config:
            continue
        cell = out.setdefault(cell_key(r), Cell(
            seeds=set(), fingerprints={}, commits=set(), variants=set(),
            engine=r['engine']))
        cell['seeds'].add(int(r['seed']))
        cell['fingerprints'][int(r['seed'])] = r['fingerprint']
        cell['commits'].add(r['commit'])
        cell['variants'].add((r['variant'], r['selected_by']))
    return out


def _command(key, cell: Cell, config: str, sweeps: Sequence[dict],
             planned_cache: dict) -> Tuple[List[str], str, str]:
    r"""``(argv after the script, status, runner)`` that reproduces one
    cell's runs; status: :data:`CHECKED`, :data:`AT_COMMIT` or
    :data:`UNCHECKED`."""
    _, dataset, backbone, method, _ = key
    found = runner_protocols().get(dataset)
    if found is None:
        return (['--dataset', dataset, '--method', method], UNCHECKED, '?')
    runner, proto = found
    protocols = {dataset: proto}
    if config == 'tuned':
        sweep = next((s for s in sweeps if s['dataset'] == dataset
                      and s['method'] == method
                      and (s.get('best') or {}).get('command')), None)
        extras = [_strip_sweep_options(shlex.split(
            sweep['best']['command']))] if sweep else [[]]
    else:
        extras = [CONFIG_OPTIONS.get(config, [])]
    tail = ['--method', method, '--seeds', seeds_arg(sorted(cell['seeds']))]
    candidates = [['--dataset', dataset] + bb + tail + extra
                  for bb in _backbone_options(proto, backbone) or [[]]
                  for extra in extras]
    want = cell['fingerprints']
    for argv in candidates:
        cache_key = (runner, tuple(argv))
        if cache_key not in planned_cache:
            planned_cache[cache_key] = _planned(runner, protocols, argv)
        got = planned_cache[cache_key]
        if got is None:
            continue
        for i, status in ((0, CHECKED), (1, AT_COMMIT)):
            if all((got.get((method, s)) or ('', ''))[i] == fp
                   for s, fp in want.items()):
                return (argv + (['--seed-batch', '1'] if status == AT_COMMIT
                                else []), status, runner)
    return candidates[0], UNCHECKED, runner


def provenance_lines(rows: Sequence[dict], config: str, tables=None,
                     sweeps: Sequence[dict] = (),
                     order: Optional[Mapping[str, int]] = None,
                     title: str = 'Code and command of these rows'
                     ) -> List[str]:
    r"""A compact list of the code (commits) and the command of the cells
    of :obj:`config` (of :obj:`tables` when given), one line per command:
    cells of one dataset trained by one command are one line."""
    cells = {k: v for k, v in cell_runs(rows, config).items()
             if tables is None or k[0] in tables}
    if not cells:
        return []
    order = order or {}
    cache: dict = {}
    lines: Dict[tuple, list] = {}
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[2],
                                            method_rank(k[3]), k[4])):
        cell = cells[key]
        argv, status, runner = _command(key, cell, config, sweeps, cache)
        if len({v for v, _ in cell['variants']}) > 1:
            argv = argv + ['--compare-evals']
        i = argv.index('--method')
        group = (key[1], key[2], runner, tuple(argv[:i]),
                 tuple(argv[i + 2:]), commit_text(cell['commits'], order)
                 + f" (engine {cell['engine']})", status)
        lines.setdefault(group, []).append(key[3])
    out = [f'{title} (`commit`: the code that trained them; the command '
           f'trains the same runs, checked by their fingerprints, with '
           f'today\'s code unless marked):', '']
    for (dataset, backbone, runner, head, tail, code, status), methods \
            in lines.items():
        argv = list(head) + ['--method', *methods] + list(tail)
        out.append(
            f"- {dataset} {backbone}: "
            f"{', '.join(method_label(m) for m in methods)}: code {code}; "
            f"`{shlex.join(['python', f'benchmarks/{runner}.py', *argv])}`"
            + STATUS_NOTES[status])
    return out + ['']
