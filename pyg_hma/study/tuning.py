r"""Section 3 of the study, tuned as the paper did: the committed sweep
summaries (``results/paper/sweeps/DATASET-METHOD.json``, copies of each
sweep's ``best.json``, see :mod:`.sweep`), collecting them with their
confirmation runs, and the report's section on them."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..methods import method_label
from ..train.metrics import METRIC_LABELS, scale_for_table
from ..train.results import RunsFileError, method_rank, write_json
from .cells import (PAIRED_HEADER, cells_of, num, paired_rows, paper_cell,
                    seeds_cell)
from .rows import DEFAULT_EVAL, collect
from .stats import verdict
from .sweep_space import SUMMARY_IDENTITY, SWEEP_KIND, summary_differences


def sweeps_folder(runs_csv: os.PathLike) -> Path:
    r"""Where committed sweep summaries live (``sweeps/`` beside
    :obj:`runs_csv`): one ``DATASET-METHOD.json`` per sweep, a copy of the
    sweep's ``best.json`` (see :mod:`.sweep`)."""
    return Path(runs_csv).with_name('sweeps')


def read_sweeps(folder: os.PathLike) -> List[dict]:
    r"""The sweep summaries in :obj:`folder` (none when it does not exist),
    sorted by dataset and method."""
    out = []
    for path in sorted(Path(folder).glob('*.json')) if \
            Path(folder).is_dir() else ():
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:
            raise RunsFileError(f"'{path}' is not readable JSON ({e}); "
                                f"copy a sweep's best.json there") from None
        kind = rec.get('kind') if isinstance(rec, dict) else None
        if kind != SWEEP_KIND:
            raise RunsFileError(f"'{path}' is not a sweep summary (kind "
                                f"{kind!r}); copy a sweep's best.json "
                                f"there")
        out.append(rec)
    return sorted(out, key=lambda r: (r['dataset'], method_rank(r['method'])))


def collect_sweeps(folders: Iterable[os.PathLike], runs_csv: os.PathLike,
                   skipped: Optional[List[Tuple[str, str]]] = None
                   ) -> List[str]:
    r"""Commits the sweeps below :obj:`folders` (each a sweep's output
    folder holding ``best.json``, see :mod:`.sweep`): its summary goes to
    :func:`sweeps_folder` as ``DATASET-METHOD.json`` when it holds more
    than the copy there (more finished trials, or the confirmation the copy
    lacks; never fewer), and its confirmation's finished runs
    (``confirm/``) are collected into :obj:`runs_csv` as ``tuned`` rows.

    Returns one line per sweep saying what was done; files of a
    confirmation that are not collected go to :obj:`skipped` (see
    :func:`~.rows.collect`). A summary of another sweep than the copy
    (other space, seeds or runner options) raises :class:`RunsFileError`
    before anything is written."""
    target = sweeps_folder(runs_csv)
    plan = []
    for folder in folders:
        for path in sorted(Path(folder).rglob('best.json')):
            try:
                new = json.loads(path.read_text())
            except (OSError, ValueError, RecursionError) as e:
                raise RunsFileError(f"'{path}' is not readable JSON ({e})"
                                    ) from None
            if not isinstance(new, dict) or new.get('kind') != SWEEP_KIND:
                continue
            dest = target / f"{new['dataset']}-{new['method']}.json"
            old = json.loads(dest.read_text()) if dest.exists() else None
            if old is not None:
                differ = summary_differences(
                    old, new, SUMMARY_IDENTITY + ('confirm_seeds', ))
                if differ:
                    raise RunsFileError(
                        f"'{path}' is another sweep than the committed "
                        f"'{dest}' (its {', '.join(differ)} differ); a "
                        f"committed summary is never replaced by another "
                        f"sweep's")
            plan.append((path, new, dest, old))
    lines = []
    for path, new, dest, old in plan:
        name = dest.stem
        n_new = len(new['trials'])
        n_old = -1 if old is None else len(old['trials'])
        if n_new > n_old or (n_new == n_old and new.get('confirm')
                             and not old.get('confirm')):
            write_json(dest, new)
            lines.append(f"{name}: {n_new} of {new['num_trials']} trials"
                         + (', confirmed' if new.get('confirm') else '')
                         + f' -> {dest}')
        else:
            lines.append(f'{name}: the committed summary holds as much '
                         f'({n_old} trials); left as it is')
        confirm = path.parent / 'confirm'
        if confirm.is_dir():
            added, kept = collect([confirm], runs_csv, 'tuned', skipped)
            lines.append(f'{name}: confirmation runs: {added} rows added, '
                         f'{kept} already there')
    return lines


def _ordered(values: Sequence) -> list:
    r"""An axis of a sweep's grid in increasing order when its values are
    numbers (the space lists learning rates as 1e-3, 3e-3, 1e-4, 3e-4)."""
    values = list(values)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in values)
    return sorted(values) if numbers else values


def sweep_grid(sweep: dict) -> Optional[dict]:
    r"""A sweep's trials as a 2-D grid (``None`` unless it has 2 axes)."""
    axes = list(sweep['space'])
    if len(axes) != 2:
        return None
    (y_key, y_values), (x_key, x_values) = [(k, _ordered(sweep['space'][k]))
                                            for k in axes]
    scores = [[None] * len(x_values) for _ in y_values]
    best, metric = None, 'mcc'
    for t in sweep['trials']:
        r = y_values.index(t['params'][y_key])
        c = x_values.index(t['params'][x_key])
        metric = t.get('metric', metric)
        if t['val_mean'] is not None:  # on the tables' scale
            scores[r][c] = scale_for_table(metric, t['val_mean'])
        if sweep.get('best') and t['trial'] == sweep['best']['trial']:
            best = (r, c)
    return dict(title=f"{sweep['dataset']} {method_label(sweep['method'])}: "
                      f"mean validation {METRIC_LABELS.get(metric, metric)} "
                      f"({len(sweep['search_seeds'])} search seeds)",
                x_label=x_key, x_values=x_values, y_label=y_key,
                y_values=y_values, scores=scores, best=best)


def tuning_section(sweeps, rows, config, metric_of, figures, paper=None,
                   comps: Sequence[dict] = (),
                   provenance: Sequence[str] = ()) -> List[str]:
    r"""The report's section on the sweeps: each sweep's best (on
    validation), its confirmation beside the protocol's cell and the
    paper's, tuned HMA against tuned ERM (:obj:`comps`, the comparisons of
    the ``tuned`` cells, adjusted with the report's others) and the
    :obj:`provenance` lines of the tuned rows."""
    if not sweeps:
        return []
    main = cells_of(rows, f'{config}/{DEFAULT_EVAL}', DEFAULT_EVAL)
    tuned = cells_of(rows, f'tuned/{DEFAULT_EVAL}', DEFAULT_EVAL)
    where: Dict[str, tuple] = {}  # dataset -> (table, backbone)
    for key in list(main) + list(tuned):
        where.setdefault(key[1], (key[0], key[2]))
    out = ['## Tuned as the paper did', '',
           "`benchmarks/sweep.py`: HMA over the paper's grid (memory size "
           "M in {1, 2, 3} x batch size, slots per class k in {8, 16, 32, "
           "64}), ERM over the same number of trials (dropout x learning "
           "rate); each trial scored by its mean validation over the search "
           "seeds (test never read), the best confirmed on seeds 0-9. The "
           f"`{config}` column is the runners' protocol (the tables above).",
           '', '| dataset | method | trials | best (validation) | '
           'confirmed test (n) | ' + f'`{config}` test (n) | paper | '
           'verdict (confirmed) |', '|---|---|---|---|---|---|---|---|']
    for sw in sweeps:
        metric = sw['trials'][0]['metric'] if sw['trials'] else 'mcc'
        best = sw.get('best')
        conf = sw.get('confirm')
        params = ', '.join(f'{k.split(".")[-1]}={v}'
                           for k, v in best['params'].items()) if best \
            else '-'
        best_cell = (f"{params}: "
                     f"{num(scale_for_table(metric, best['val_mean']), metric)}"
                     if best else '-')
        conf_cell = seeds_cell(dict(enumerate(
            scale_for_table(metric, v) for v in conf['test'])), metric) \
            if conf else 'not yet'
        published = [v for k, v in main.items()
                     if k[1] == sw['dataset'] and k[3] == sw['method']]
        # Several configurations (engine versions): the most seeds, as in
        # the At-a-glance counts.
        pub_cell = seeds_cell(max(published, key=len), metric) \
            if published else '-'
        table, backbone = where.get(sw['dataset'], ('', ''))
        cell = paper_cell(paper, table, sw['dataset'], backbone,
                          sw['method'])
        paper_text = (f'{num(cell[0], metric)} ± {num(cell[1], metric)}'
                      if cell else '-')
        verdict_cell = verdict([scale_for_table(metric, v)
                                for v in conf['test']],
                               cell[0] if cell else None) if conf else '-'
        out.append(f"| {sw['dataset']} | {method_label(sw['method'])} | "
                   f"{len(sw['trials'])} / {sw['num_trials']} | {best_cell} "
                   f"| {conf_cell} | {pub_cell} | {paper_text} | "
                   f"{verdict_cell} |")
    out.append('')
    paired = paired_rows(comps, metric_of, paper)
    if paired:
        out += ['Tuned HMA against tuned ERM (each with its own best '
                'configuration, the same confirmation seeds), paired by '
                'seed:', ''] + PAIRED_HEADER[2:] + paired + ['']
    out += list(provenance)
    for dataset in sorted({sw['dataset'] for sw in sweeps}):
        if figures and f'sweep:{dataset}' in figures:
            out += [f"![sweep {dataset}]({figures[f'sweep:{dataset}']})", '']
    return out


