r"""A sweep's search space, its trials' settings, their scores and the
summary (``best.json``) it writes: the parts of :mod:`.sweep` that need
neither Optuna nor the runners.

Search spaces (``--space paper``, the default without ``--param``):

* HMA and its ablations, the paper's search: memory size
  M in {1, 2, 3} x the protocol's batch size and slots per class
  k in {8, 16, 32, 64}: 12 trials.
* Every other method (ERM, IRM, ...), the same budget of 12 trials: the
  backbone's dropout in {0.1, 0.3, 0.5} x learning rate in
  {1e-3, 3e-3, 1e-4, 3e-4}.

A trial's settings are ``SECTION.NAME`` keys, the runners' ``--set``
language (:func:`trial_settings`), applied to the run specification as
``--set`` does; ``momentum`` sets HMA's key-encoder momentum.
"""
from __future__ import annotations

import itertools
import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..methods import METHODS
from ..runners.spec import SETTING_SECTIONS, seed_list
from ..train.metrics import METRIC_LABELS, scale_for_table
from ..train.results import fmt, mean_std

SEARCH_SEED_START = 100  # search seeds 100, 101, ...: not confirmation seeds
STUDY_NAME = 'sweep'
SWEEP_KIND = 'pyg_hma.sweep'
OPTUNA_MISSING = ("sweeps need optuna, an optional dependency: "
                  "pip install 'pyg_hma[sweep]'")

# The paper's search (per dataset, on validation): M in {1, 2, 3} x batch
# size, k in {8, 16, 32, 64}. '2x' = 2 x the batch size.
PAPER_HMA_SPACE = {'hma.memory_size': ['1x', '2x', '3x'],
                   'hma.slots_per_class': [8, 16, 32, 64]}
# ERM (and every non-HMA method) gets the same number of trials, 3 x 4 = 12.
PAPER_ERM_SPACE = {'backbone.dropout': [0.1, 0.3, 0.5],
                   'train.lr': [1e-3, 3e-3, 1e-4, 3e-4]}

ALIASES = {
    'M': 'hma.memory_size', 'memory_size': 'hma.memory_size',
    'k': 'hma.slots_per_class', 'slots_per_class': 'hma.slots_per_class',
    'l': 'hma.label_dim', 'label_dim': 'hma.label_dim',
    'dropout': 'backbone.dropout', 'lr': 'train.lr',
}
# Swept keys written with the runner's own options in the command a sweep
# prints to reproduce its best trial (the rest: --set KEY=V).
RUNNER_OPTIONS = {
    'hma.memory_size': '--memory-size',
    'hma.slots_per_class': '--slots-per-class',
    'hma.label_dim': '--label-dim',
    'backbone.dropout': '--dropout',
    'train.lr': '--lr',
    'momentum': '--momentum',
}
# The sweep sets these itself for every run.
OWN_OPTIONS = ('--dataset', '--method', '--seeds', '--out', '--resume')
# Where the runs train, not what they are: the sweep's own options, kept out
# of the study's identity (a sweep continues on Ray or locally alike).
RAY_OPTIONS = ('--ray', '--ray-cpus-per-run', '--ray-gpus-per-run')


#: The fields of a sweep's summary (``best.json``) that say which sweep it
#: is: two summaries alike in these are of one sweep.
SUMMARY_IDENTITY = ('runner', 'dataset', 'method', 'space', 'search_seeds',
                    'quick', 'runner_options')


def summary_differences(a: Mapping[str, Any], b: Mapping[str, Any],
                        fields: Sequence[str] = SUMMARY_IDENTITY) -> List[str]:
    r"""The :obj:`fields` in which two sweep summaries differ (none: the
    same sweep)."""
    return [k for k in fields if a.get(k) != b.get(k)]


class SweepError(Exception):
    r"""Bad input, found before any training (exit status 2)."""



# --------------------------------------------------------------------------
# Search spaces and trials
# --------------------------------------------------------------------------

def parse_value(text: str):
    r"""One value of ``--param``: JSON (``1e-3``, ``true``, ``null``),
    ``none`` (``None``), ``2x`` (kept: a multiple of the batch size) or else
    the string itself."""
    text = text.strip()
    if text.lower() == 'none':
        return None
    if text.endswith('x'):
        try:
            return f'{int(text[:-1])}x' if int(text[:-1]) > 0 else text
        except ValueError:
            pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_param(text: str):
    r"""``'hma.memory_size=32,64'`` -> ``('hma.memory_size', [32, 64])``."""
    key, sep, raw = text.partition('=')
    key = ALIASES.get(key.strip(), key.strip())
    section, dot, name = key.partition('.')
    values = [parse_value(v) for v in raw.split(',') if v.strip()]
    if (not sep or not values or not (
            key == 'momentum'
            or (dot and name and section in SETTING_SECTIONS))):
        raise SweepError(
            f"--param expects KEY=V1,V2,... with KEY one of hma.NAME, "
            f"backbone.NAME, train.NAME, method.NAME, momentum or "
            f"{', '.join(ALIASES)} (e.g. hma.memory_size=32,64), got "
            f"'{text}'")
    if len(set(map(json.dumps, values))) != len(values):
        raise SweepError(f"--param {key}: a value is repeated in '{raw}'")
    return key, values


def paper_space(method: str) -> Dict[str, list]:
    r"""The built-in space of :obj:`method` (values ``'Nx'`` are multiples
    of the batch size): the paper's M x k grid for HMA and its ablations,
    dropout x learning rate with as many trials for the other methods."""
    spec = METHODS.get(method)
    space = (PAPER_HMA_SPACE if spec is not None and spec.uses_hma
             else PAPER_ERM_SPACE)
    return {key: list(values) for key, values in space.items()}


def resolve_space(space: Mapping[str, Sequence], batch_size: int
                  ) -> Dict[str, list]:
    r"""Replaces every ``'Nx'`` by N x :obj:`batch_size`."""
    def value(v):
        if isinstance(v, str) and v.endswith('x') and v[:-1].isdigit():
            return int(v[:-1]) * batch_size
        return v
    out = {}
    for key, values in space.items():
        out[key] = [value(v) for v in values]
        if len(set(map(json.dumps, out[key]))) != len(out[key]):
            raise SweepError(f"--param {key}: values {list(values)} repeat "
                             f"one another at batch size {batch_size}")
    return out


def grid(space: Mapping[str, Sequence]) -> List[Dict[str, Any]]:
    r"""Every combination of :obj:`space`, the first key varying slowest."""
    keys = list(space)
    return [dict(zip(keys, combo))
            for combo in itertools.product(*(space[k] for k in keys))]


def trial_ids(points: Sequence[Mapping[str, Any]]) -> List[str]:
    r"""``t00``, ``t01``, ...: a trial's folder name, its place in the
    grid."""
    width = max(2, len(str(len(points) - 1)))
    return [f't{i:0{width}d}' for i in range(len(points))]


def point_key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(sorted(params.items())))


def arg_value(value) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def trial_settings(params: Mapping[str, Any]
                   ) -> Tuple[List[Tuple[str, str, Any]], Dict[str, Any]]:
    r"""A trial's :obj:`params` in the runners' ``--set SECTION.NAME=VALUE``
    language: ``([(section, name, value), ...], other)``, where ``other``
    holds the one key that is no setting, ``momentum`` (checked: a number
    in [0, 1] or ``None``). Raises :class:`SweepError` for a key outside
    :data:`~pyg_hma.runners.spec.SETTING_SECTIONS` or a bad momentum."""
    settings, other = [], {}
    for key, value in params.items():
        if key == 'momentum':
            if value is not None and (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not 0.0 <= value <= 1.0):
                raise SweepError(f"--param momentum: --momentum expects a "
                                 f"number in [0, 1] or 'none', got "
                                 f"'{arg_value(value)}'")
            other['momentum'] = value
            continue
        section, dot, name = key.partition('.')
        if not dot or not name or section not in SETTING_SECTIONS:
            raise SweepError(f"--param {key}: not a SECTION.NAME setting "
                             f"(SECTION one of "
                             f"{', '.join(SETTING_SECTIONS)})")
        settings.append((section, name, value))
    return settings, other


def trial_args(params: Mapping[str, Any]) -> List[str]:
    r"""The runner options that set a trial's :obj:`params`, for the
    command a sweep prints to reproduce a trial (the sweep itself applies
    :func:`trial_settings` to the run specification)."""
    argv = []
    for key, value in params.items():
        if key == 'momentum':
            argv += ['--momentum', 'none' if value is None else str(value)]
        elif key in RUNNER_OPTIONS:
            argv += [RUNNER_OPTIONS[key], arg_value(value)]
        else:
            argv += ['--set', f'{key}={arg_value(value)}']
    return argv


def seeds_arg(seeds: Sequence[int]) -> str:
    r"""The runner's ``--seeds`` for exactly :obj:`seeds` (a bare number
    would be a count)."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0],
                                                    seeds[-1] + 1)):
        return f'{seeds[0]}-{seeds[-1]}'
    if len(seeds) == 1:
        return f'{seeds[0]}-{seeds[0]}'
    return ','.join(map(str, seeds))


def parse_seed_list(text: str, start: int, option: str) -> List[int]:
    r"""A count ``3`` (seeds :obj:`start` .. :obj:`start` + 2), a range
    ``100-102`` or a list ``100,105``; ``0`` or ``none``: no seeds."""
    if text.strip().lower() in ('0', 'none'):
        return []
    try:
        return seed_list(text, start)
    except ValueError as e:
        raise SweepError(f'{option} {e}') from None


# --------------------------------------------------------------------------
# Scores: validation only
# --------------------------------------------------------------------------

def score_runs(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    r"""A trial's score from its runs' result records: the mean validation
    score over seeds (``val_mean``), with the sample std and the count. Only
    ``'val'`` is read: a test score cannot influence the choice."""
    val = {int(r['seed']): float(r['val']) for r in records}
    mean, std = finite_or_none(mean_std(list(val.values())))
    return {'val_mean': mean, 'val_std': std, 'n': len(val),
            'val': {str(s): v for s, v in sorted(val.items())},
            'metric': records[0]['metric'] if records else None}


def finite_or_none(values):
    # NaN (no std of one seed) is written as null: best.json stays JSON.
    return tuple(None if v is None or math.isnan(v) else v for v in values)


def choose_best(trials: Sequence[Mapping[str, Any]]) -> Optional[dict]:
    r"""The trial with the highest ``val_mean`` (the first of equals);
    ``None`` when no trial has a score."""
    best = None
    for trial in trials:
        v = trial.get('val_mean')
        if v is None or math.isnan(v):
            continue
        if best is None or v > best['val_mean']:
            best = trial
    return best



# --------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------

def fmt_params(params: Mapping[str, Any]) -> str:
    return ' '.join(f'{k}={arg_value(v)}' for k, v in params.items())


def fmt_score(mean, std, metric) -> str:
    if mean is None or math.isnan(mean):
        return '-'
    return fmt(scale_for_table(metric, mean),
               None if std is None else scale_for_table(metric, std), metric)


def format_report(report: Mapping[str, Any]) -> str:
    r"""The sweep's tables as markdown: one row per trial (mean validation
    ± std over the search seeds, n), the best, the confirmation."""
    trials = report['trials']
    metric = trials[0]['metric'] if trials else 'accuracy'
    keys = list(report['space'])
    best = report['best']
    lines = [f"Sweep {report['runner']} / {report['dataset']} / "
             f"{report['method']} ({report['space_name']} space, "
             f"{len(trials)} of {report['num_trials']} trials finished): "
             f"mean validation {METRIC_LABELS.get(metric, metric)} over "
             f"search seeds {report['search_seeds']}",
             '', '| trial | ' + ' | '.join(keys) + ' | val | n |',
             '|' + '---|' * (len(keys) + 3)]
    for t in trials:
        mark = ' (best)' if best and t['trial'] == best['trial'] else ''
        lines.append(f"| {t['trial']}{mark} | "
                     + ' | '.join(arg_value(t['params'][k]) for k in keys)
                     + f" | {fmt_score(t['val_mean'], t['val_std'], metric)}"
                     f" | {t['n']} |")
    lines.append('')
    if best is None:
        lines.append('No finished trial yet.')
    else:
        val = fmt_score(best['val_mean'], best['val_std'], metric)
        lines.append(f"Best: {best['trial']} ({fmt_params(best['params'])}),"
                     f" val {val} (test scores were not read)")
        lines.append(f"Reproduce: {best['command']}")
    conf = report.get('confirm')
    if conf:
        m = conf['metric']
        val = fmt_score(conf['val_mean'], conf['val_std'], m)
        test = fmt_score(conf['test_mean'], conf['test_std'], m)
        lines.append(
            f"Confirmation of {conf['trial']} on seeds {conf['seeds']} "
            f"({conf['out']}): val {val}, {conf['test_name']} {test}, "
            f"n={conf['n']}")
    elif not report['complete']:
        lines.append(f"Unfinished: {report['num_trials'] - len(trials)} "
                     f"trial(s) left; run the same command again to "
                     f"continue (the confirmation follows the last trial).")
    elif not report['confirm_seeds']:
        lines.append('No confirmation (--confirm-seeds 0).')
    return '\n'.join(lines) + '\n'


