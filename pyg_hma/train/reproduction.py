r"""The reproduction study: committed run rows and the report built from them.

Finished runs (one JSON per method and seed, see :mod:`.results`) are
*collected* into one small CSV, ``results/paper/runs.csv``, one row per run
and eval setting, so that the report regenerates from committed files
without retraining:

.. code-block:: text

    table,dataset,backbone,method,variant,selected_by,seed,metric,val,test,
    selected_epoch,epochs,seconds,device,config_id,fingerprint,commit

* ``variant`` is ``CONFIG/SCORED_BY``: the configuration (``published``: the
  runners' protocol; ``tuned``: a sweep's best; ``reference``: the released
  code's module) and the eval mode the scores were taken under
  (``independent``, ``shuffled``, ``order``; see
  :data:`~pyg_hma.train.engine.EVAL_MODES`).
* ``selected_by`` is the eval mode whose validation score chose the epoch.
  A run trained with ``--compare-evals`` gives five rows: its own selection
  scored three ways, and the selection each other mode would have made.
* Scores are raw (MCC, accuracy and ROC-AUC as fractions); ``metric`` says
  which. The report puts them on the paper's scale.
* ``config_id`` identifies the run's whole configuration except its seed:
  runs of different configurations are never averaged together.

Rows are identified by ``(fingerprint, seed, variant, selected_by)``;
collecting again never changes a row that is already there. Beside it,
``curves.csv`` keeps the per-epoch training loss and validation/test
scores of the runs the curves figure draws, and
``sweeps/DATASET-METHOD.json`` the summaries of the study's sweeps
(section 3: tuned as the paper did).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..files import atomic_path
from .engine import EVAL_MODES, fingerprint
from .metrics import METRIC_LABELS, scale_for_table
from ..methods import METHODS
from .results import (TABLE_TITLES, find_results, in_sweep, method_label,
                      method_rank)

RUNS_COLUMNS = ('table', 'dataset', 'backbone', 'method', 'variant',
                'selected_by', 'seed', 'metric', 'val', 'test',
                'selected_epoch', 'epochs', 'seconds', 'device',
                'config_id', 'fingerprint', 'commit')
ROW_KEY = ('fingerprint', 'seed', 'variant', 'selected_by')
DEFAULT_EVAL = 'independent'
CONFIGS = ('published', 'tuned', 'reference')

#: Verdict rule, stated once in the report.
VERDICT_RULE = (
    "A cell is **reproduced** when the paper's mean lies inside the 95% "
    "confidence interval of our mean over seeds (Student's t, n-1 degrees "
    "of freedom), **not reproduced** when it lies outside (we say whether "
    "ours is above or below), and **inconclusive** with fewer than 3 seeds.")


#: Per-epoch curves beside ``runs.csv`` (``curves.csv``): one row per run
#: and epoch, the run's own eval mode; joined to the runs by
#: ``(fingerprint, seed)``.
CURVES_COLUMNS = ('fingerprint', 'seed', 'epoch', 'train_loss', 'val', 'test')


class RunsFileError(ValueError):
    r"""``runs.csv`` is malformed or a collection would change a row."""


# --------------------------------------------------------------------------
# Collecting
# --------------------------------------------------------------------------

def rows_of_result(rec: dict, config: str = 'published') -> List[dict]:
    r"""The ``runs.csv`` rows of one result record (a run's JSON)."""
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS} (got '{config}')")
    primary = rec['primary_test']
    own = rec.get('eval_mode', 'order')  # results before eval modes: order
    common = dict(
        table=rec.get('table') if rec.get('table') is not None else '',
        dataset=rec['dataset'], backbone=rec['backbone_label'],
        method=rec['method'], seed=rec['seed'], metric=rec['metric'],
        epochs=rec['epochs_run'], seconds=round(rec['wall_time_s'], 1),
        config_id=fingerprint({k: rec.get(k) for k in (
            'runner', 'dataset', 'backbone', 'method', 'config')})[:10],
        device=rec.get('device_name') or rec.get('device'),
        fingerprint=rec['run_fingerprint'], commit=rec.get('commit') or '')

    def row(scored_by, selected_by, val, test, epoch):
        return dict(common, variant=f'{config}/{scored_by}',
                    selected_by=selected_by, val=val, test=test[primary],
                    selected_epoch=epoch)

    rows = [row(own, own, rec['val'], rec['test'], rec['selected_epoch'])]
    for mode, chosen in (rec.get('by_eval_mode') or {}).items():
        if mode == own:
            continue
        at_run = chosen['at_run_selection']
        rows.append(row(mode, own, at_run['val'], at_run['test'],
                        rec['selected_epoch']))
        rows.append(row(mode, mode, chosen['val'], chosen['test'],
                        chosen['selected_epoch']))
    return rows


def curve_rows_of_result(rec: dict) -> List[dict]:
    r"""The ``curves.csv`` rows of one result record: per epoch, the
    training loss and the validation and primary test scores under the
    run's own eval mode (6 significant digits; empty when not finite)."""
    primary = rec['primary_test']

    def short(value) -> str:
        return f'{value:.6g}' if isinstance(value, (int, float)) and \
            math.isfinite(value) else ''
    return [dict(fingerprint=rec['run_fingerprint'], seed=rec['seed'],
                 epoch=h['epoch'], train_loss=short(h.get('train_loss')),
                 val=short(h.get('val')),
                 test=short((h.get('test') or {}).get(primary)))
            for h in rec.get('history') or ()]


def curves_path(runs_csv: os.PathLike) -> Path:
    r"""Where the curves of :obj:`runs_csv` live (``curves.csv`` beside)."""
    return Path(runs_csv).with_name('curves.csv')


def _read_csv(path: os.PathLike, columns: Sequence[str], what: str
              ) -> List[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise RunsFileError(f"'{path}' lacks the columns "
                                f"{sorted(missing)}; it is not a {what} of "
                                f"this project")
        return [dict(r) for r in reader]


def _write_csv(path: os.PathLike, columns: Sequence[str], rows) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=columns,
                                    lineterminator='\n')
            writer.writeheader()
            writer.writerows({k: r[k] for k in columns} for r in rows)


def read_runs(path: os.PathLike) -> List[dict]:
    r"""The rows of a ``runs.csv`` (empty when the file does not exist)."""
    return _read_csv(path, RUNS_COLUMNS, 'runs.csv')


def read_curves(path: os.PathLike) -> List[dict]:
    r"""The rows of a ``curves.csv`` (empty when the file does not exist)."""
    return _read_csv(path, CURVES_COLUMNS, 'curves.csv')


def _key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in ROW_KEY)


def _same(a: dict, b: dict) -> bool:
    for col in RUNS_COLUMNS:
        x, y = str(a[col]), str(b[col])
        if x == y:
            continue
        try:  # numbers that went through CSV text
            if math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12):
                continue
        except ValueError:
            pass
        return False
    return True


def collect(folders: Iterable[os.PathLike], runs_csv: os.PathLike,
            config: str = 'published') -> Tuple[int, int]:
    r"""Adds the rows of every finished, non-quick run under
    :obj:`folders` to :obj:`runs_csv` (written atomically). A sweep's runs
    found below a folder (its trials ran other settings) are left out; name
    its ``confirm`` folder, or use :func:`collect_sweeps`.

    Returns ``(rows added, rows already there)``. A row whose key is present
    with other values raises :class:`RunsFileError` and writes nothing.
    The per-epoch curves of the runs the curves figure draws
    (:data:`CURVE_CELLS` x :data:`CURVE_METHODS`) are added to
    :func:`curves_path` (a run whose curves are there already is left as it
    is); other runs' curves are not kept (800-epoch runs would make the file
    grow by megabytes for nothing).
    """
    existing = read_runs(runs_csv)
    index = {_key(r): r for r in existing}
    added: List[dict] = []
    kept = 0
    old_curves = read_curves(curves_path(runs_csv))
    have_curves = {(r['fingerprint'], str(r['seed'])) for r in old_curves}
    new_curves: List[dict] = []
    folders = list(folders)
    for rec in find_results(folders):
        if rec.get('quick') or in_sweep(rec['_path'], folders):
            continue
        if _drawn(str(rec.get('table')), rec['dataset'], rec['method']) \
                and (rec['run_fingerprint'], str(rec['seed'])) \
                not in have_curves:
            have_curves.add((rec['run_fingerprint'], str(rec['seed'])))
            new_curves += curve_rows_of_result(rec)
        for row in rows_of_result(rec, config):
            old = index.get(_key(row))
            if old is None:
                index[_key(row)] = row
                added.append(row)
            elif _same(old, row):
                kept += 1
            else:
                raise RunsFileError(
                    f"{rec['_path']}: its row {_key(row)} is already in "
                    f"'{runs_csv}' with other values; the committed row is "
                    f"never changed (collect into another file to compare)")
    if added:
        rows = existing + added
        rows.sort(key=lambda r: (str(r['table']), r['dataset'],
                                 r['backbone'], method_rank(r['method']),
                                 r['variant'], r['selected_by'],
                                 int(r['seed']), r['fingerprint']))
        _write_csv(runs_csv, RUNS_COLUMNS, rows)
    drawn = {(r['fingerprint'], str(r['seed'])) for r in index.values()
             if _drawn(str(r['table']), r['dataset'], r['method'])}
    kept_curves = [c for c in old_curves
                   if (c['fingerprint'], str(c['seed'])) in drawn]
    if new_curves or len(kept_curves) < len(old_curves):
        _write_csv(curves_path(runs_csv), CURVES_COLUMNS,
                   kept_curves + new_curves)
    return len(added), kept


def _drawn(table: str, dataset: str, method: str) -> bool:
    # Whether the curves figure draws runs of this cell and method.
    return (table, dataset) in CURVE_CELLS and method in CURVE_METHODS


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------

def mean_interval(values: Sequence[float], level: float = 0.95
                  ) -> Tuple[float, float, float, int]:
    r"""``(mean, std, half-width of the t interval, n)`` of the finite
    :obj:`values` (std and half-width NaN below 2 values)."""
    import numpy as np
    from scipy import stats
    vals = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n < 2:
        return float(vals.mean()), math.nan, math.nan, 1
    std = float(vals.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return float(vals.mean()), std, half, n


def verdict(values: Sequence[float], paper_mean: Optional[float]) -> str:
    r"""``reproduced``, ``not reproduced (below|above)``, ``inconclusive``
    or ``no paper number`` (see :data:`VERDICT_RULE`)."""
    if paper_mean is None:
        return 'no paper number'
    mean, _, half, n = mean_interval(values)
    if n < 3:
        return 'inconclusive'
    if abs(mean - paper_mean) <= half:
        return 'reproduced'
    return 'not reproduced (' + ('below' if mean < paper_mean else 'above') \
        + ')'


def paired_difference(a: Dict[int, float], b: Dict[int, float]
                      ) -> Optional[dict]:
    r"""``a - b`` paired by seed: mean, 95% interval, paired t-test p-value
    and the number of pairs (``None`` below 2 pairs)."""
    from scipy import stats
    seeds = sorted(s for s in set(a) & set(b)
                   if math.isfinite(a[s]) and math.isfinite(b[s]))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, std, half, n = mean_interval(diffs)
    p = float(stats.ttest_rel([a[s] for s in seeds],
                              [b[s] for s in seeds]).pvalue) if std > 0 \
        else (1.0 if mean == 0 else 0.0)
    return dict(mean=mean, low=mean - half, high=mean + half, p=p, n=n)


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------

#: Known differences between this project's setting and the paper's, with
#: the results they affect (the report lists them beside the tables).
SETTING_DIFFERENCES = (
    ('Table 6 (all)', 'Size-shift splits are derived from the stated rule '
     '(training pool: graphs with at most the median node count; test: at '
     'least the 90th percentile; a seeded 10% of the pool validates) from '
     'the raw TU files. The original index files were published as a '
     'download that this machine cannot reach, so membership may differ at '
     'the thresholds and the validation draw differs.'),
    ('Table 6 DD', "DD_A.txt was rebuilt from a DGCNN-format copy: same edge "
     "set, line order may differ (see ../shared/data/README.md)."),
    ('Table 5', 'Graph-SST5 and Graph-Twitter are rebuilt from raw text: '
     'dependency parses from spaCy and word features from all-MiniLM-L6-v2 '
     '(384 dims) instead of BERT (768); graph counts match (11855 / 6940).'),
    ('Table 4 REDDIT-BINARY', 'rebuilt from a DGCNN-format copy; '
     'REDDIT-MULTI-5K/12K are not in the offline mirror (not run).'),
    ('All tables', "The paper's ± are standard deviations over epochs in its "
     "released code; ours are over seeds (one test score per seed at the "
     "best-validation epoch)."),
    ('HMA (all)', "HMA's M, k, l are the runners' protocol values: "
     "PROTEINS and Graph-Twitter from the released commands; Graph-SST5 "
     "from a released command that trains CIGA, not HMA; NCI1, NCI109, DD "
     "and OGB the released main.py's argparse defaults (M=256, k=8, l=16), "
     "for which no command was released. The readout is this project's; the "
     "released module differs in 16 documented ways (docs/hma.md), "
     "available as --set hma.style=reference."),
    ('Graph-Twitter HMA', 'The released command adds a contrastive loss '
     '(weight 8) on the HMA features and never writes the queue; neither '
     'is done here.'),
    ('HMA evaluation', "Default eval mode 'independent' (a graph's "
     "prediction depends on it alone); the released code evaluates across "
     "batches in dataset order ('order'). Section 'Evaluation' shows all "
     "three."),
)

#: Why the study has not run a table's cells on this machine, with their
#: measured cost: per dataset, ``None`` for the table's other datasets.
NOT_RUN_NOTES = {
    3: {None: (
        'needs a GPU: ogbg-molbace with GIN 5x300 costs 269 ms per step and '
        '10.2 s per epoch on one CPU thread (HMA x1.55), so molbace and '
        'molbbbp x 4 backbones x ERM, HMA x 10 seeds x 100 epochs is ~57 '
        'CPU-hours. `benchmarks/table3_gpu.py` (rehearsed on CPU) runs the '
        'cells seed-batched on a lent GPU within a time budget and resumes '
        'across calls; estimated 3-6 min per molbace cell and 3.5-8 min per '
        'molbbbp cell (about 76 device-minutes for both datasets), molhiv '
        '57-141 min per cell (out of reach of 15-minute loans)')},
    4: {
        None: ('not run yet (CPU; 8 seeds per cell, 800 epochs; IMDB-BINARY '
               'with the current code, seed-batched, on one core: about 0.3 s '
               'per epoch and seed for ERM-like methods and 0.6 s for the HMA '
               'family, i.e. 30-70 min per cell; `benchmarks/reproduce.sh e`)'),
        'REDDIT-BINARY': (
            'beyond this 2-core machine: one training step of one seed '
            '(G-Mixup\'s GIN, 128 graphs of ~430 nodes) costs 0.9 s on one '
            'CPU thread and seed batching does not help at that size, so a '
            'run (11 steps x 800 epochs) is ~2.2 CPU-hours and its 8 methods '
            'x 8 seeds ~140 (`benchmarks/reproduce.sh e` runs them last)'),
        'REDDIT-MULTI-5K': 'not in the offline mirror',
        'REDDIT-MULTI-12K': 'not in the offline mirror',
    },
    5: {None: 'not run yet (CPU)'},
    6: {None: 'not run yet (CPU)'},
}


def _f(value: float, metric: str, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return '-'
    digits = 3 if metric == 'mcc' else 2
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def _seeds_cell(seeds: Optional[Dict[int, float]], metric: str) -> str:
    r"""``mean ± std (n)`` of per-seed scores; empty without any."""
    if not seeds:
        return ''
    mean, std, _, n = mean_interval(list(seeds.values()))
    return f'{_f(mean, metric)} ± {_f(std, metric)} ({n})'


def _cells(rows: Sequence[dict], variant: str, selected_by: str
           ) -> Dict[tuple, Dict[int, float]]:
    r"""``{(table, dataset, backbone, method, config_id): {seed: test}}``
    on the paper's scale."""
    out: Dict[tuple, Dict[int, float]] = {}
    for r in rows:
        if r['variant'] != variant or r['selected_by'] != selected_by:
            continue
        key = (str(r['table']), r['dataset'], r['backbone'], r['method'],
               r['config_id'])
        out.setdefault(key, {})[int(r['seed'])] = scale_for_table(
            r['metric'], float(r['test']))
    return out


def _paper_cell(paper, table, dataset, backbone, method):
    from .results import paper_number
    if not paper or not table:
        return None
    # Table 6 lists no backbone; every other table names it.
    return paper_number(paper, int(table), dataset, backbone,
                        method_label(method))


def report_markdown(rows: Sequence[dict], paper: Optional[List[dict]],
                    config: str = 'published',
                    figures: Optional[Dict[str, str]] = None,
                    sweeps: Sequence[dict] = ()) -> str:
    r"""The reproduction report (markdown) from ``runs.csv`` rows."""
    metric_of = {(str(r['table']), r['dataset']): r['metric'] for r in rows}
    main = _cells(rows, f'{config}/{DEFAULT_EVAL}', DEFAULT_EVAL)
    lines = [
        '# Reproduction of the paper\'s graph results', '',
        '*Generated by `python benchmarks/reproduction.py report` from '
        '`results/paper/runs.csv` and the paper\'s published numbers '
        '(`graph_results.csv`, labelled "paper"). Do not edit by hand.*', '',
        f'Ours: the `{config}` configuration (the runners\' protocols), test '
        f'score at the best-validation epoch under the default eval mode '
        f'`{DEFAULT_EVAL}`, mean ± std over seeds (n). Scores on the '
        f'paper\'s scale (MCC raw, accuracy %, ROC-AUC × 100).', '',
        VERDICT_RULE, '']
    tables = sorted({k[0] for k in main} | {str(t) for t in NOT_RUN_NOTES},
                    key=lambda t: (t == '', t))
    lines += _summary_lines(main, paper, tables)
    for table in tables:
        title = TABLE_TITLES.get(int(table), 'Not in the paper') \
            if table else 'Not in the paper'
        lines += [f'## {title}', '']
        cells = {k: v for k, v in main.items() if k[0] == table}
        ran = {(k[1], k[2], k[3]) for k in cells}
        if cells:
            lines += ['| dataset | backbone | method | ours (n) | paper | '
                      'ours − paper | verdict |', '|---|---|---|---|---|---|---|']
            for key in sorted(cells, key=lambda k: (
                    k[1], k[2], method_rank(k[3]), k[4])):
                _, dataset, backbone, method, cid = key
                metric = metric_of[(table, dataset)]
                vals = list(cells[key].values())
                mean, std, _, n = mean_interval(vals)
                cell = _paper_cell(paper, table, dataset, backbone, method)
                label = method_label(method)
                if sum(1 for c in cells if c[1:4] == key[1:4]) > 1:
                    label += f' (config {cid})'
                lines.append(
                    f'| {dataset} | {backbone} | {label} | '
                    f'{_f(mean, metric)} ± {_f(std, metric)} ({n}) | '
                    + (f'{_f(cell[0], metric)} ± {_f(cell[1], metric)}'
                       if cell else '-') + ' | '
                    + (_f(mean - cell[0], metric, signed=True) if cell
                       else '-')
                    + f' | {verdict(vals, cell[0] if cell else None)} |')
            lines += [''] + _paired_lines(cells, table, metric_of,
                                          paper) + ['']
        missing = _paper_cells_not_run(paper, table, ran)
        for note, cells_of_note in _not_run_by_reason(table, missing):
            lines += [f'Not run ({len(cells_of_note)} paper cells): {note}. '
                      'Cells: ' + ', '.join(
                          f'{d} {b + " " if b else ""}{m}'
                          for d, b, m in cells_of_note) + '.', '']
        if figures and table in figures:
            lines += [f'![{title}]({figures[table]})', '']
    if figures and 'curves' in figures:
        lines += ['## Validation and test curves', '',
                  'ERM and HMA on one size-shift (NCI1) and one degree-shift '
                  '(Graph-SST5) dataset: per-seed curves (thin) and their '
                  'mean over the seeds still training (thick), under the '
                  'default eval mode.', '',
                  f"![curves]({figures['curves']})", '']
    lines += _tuning_section(sweeps, rows, config, metric_of, figures,
                             paper)
    lines += _eval_section(rows, config, metric_of)
    lines += _reference_section(rows, config, metric_of)
    lines += ['## Differences from the paper\'s setting', '',
              '| affects | difference |', '|---|---|']
    lines += [f'| {where} | {what} |' for where, what in SETTING_DIFFERENCES]
    return '\n'.join(lines) + '\n'


def _summary_lines(main, paper, tables) -> List[str]:
    r"""One row per table: how many cells got each verdict, how many of
    the paper's cells were not run, and HMA against ERM paired by seed
    (95% interval above zero, containing it, below it) beside the paper's
    sign."""
    out = []
    for table in tables:
        if not table:
            continue
        cells = {k: v for k, v in main.items() if k[0] == table}
        counts: Dict[str, int] = {}
        for (_, dataset, backbone, method, _cid), seeds in cells.items():
            cell = _paper_cell(paper, table, dataset, backbone, method)
            if cell is None:
                continue
            v = verdict(list(seeds.values()), cell[0])
            counts[v] = counts.get(v, 0) + 1
        missing = _paper_cells_not_run(
            paper, table, {(k[1], k[2], k[3]) for k in cells})
        hma = {'better': 0, 'no difference': 0, 'worse': 0}
        paper_better = 0
        for (_, dataset, backbone, method, _cid), seeds in cells.items():
            if method != 'hma':
                continue
            erm = next((v for k, v in cells.items() if k[1:4] ==
                        (dataset, backbone, 'erm')), None)
            d = paired_difference(seeds, erm) if erm else None
            if d is None:
                continue
            hma['better' if d['low'] > 0 else 'worse' if d['high'] < 0
                else 'no difference'] += 1
            ours_p = _paper_cell(paper, table, dataset, backbone, 'hma')
            erm_p = _paper_cell(paper, table, dataset, backbone, 'erm')
            paper_better += bool(ours_p and erm_p and ours_p[0] > erm_p[0])
        out.append(
            f'| {TABLE_TITLES.get(int(table), table).rsplit(" (", 1)[0]} | '
            + ' | '.join(str(counts.get(v, 0)) for v in (
                'reproduced', 'not reproduced (below)',
                'not reproduced (above)', 'inconclusive'))
            + f' | {len(missing)} | '
            + (f'{hma["better"]} / {hma["no difference"]} / {hma["worse"]}'
               f' ({paper_better} in the paper)' if sum(hma.values())
               else '-') + ' |')
    if not out:
        return []
    return ['## At a glance', '',
            'Cells of the paper by verdict (`published` configuration), '
            'cells not run, and HMA − ERM paired by seed: datasets where '
            'the 95% interval lies above zero / contains it / lies below '
            'it, beside the number where the paper\'s HMA beats its ERM.',
            '', '| table | reproduced | below | above | inconclusive | '
            'not run | HMA − ERM: better / no difference / worse |',
            '|---|---|---|---|---|---|---|'] + out + ['']


def _not_run_by_reason(table: str, missing: Sequence[tuple]
                       ) -> List[Tuple[str, List[tuple]]]:
    r"""``missing`` (dataset, backbone, method) cells grouped by the reason
    :data:`NOT_RUN_NOTES` gives for them (per table, or per dataset of a
    table), in order of first appearance."""
    notes = NOT_RUN_NOTES.get(int(table), {}) if table else {}
    groups: Dict[str, List[tuple]] = {}
    for cell in missing:
        note = notes.get(cell[0], notes.get(None, 'not run yet'))
        groups.setdefault(note, []).append(cell)
    return list(groups.items())


def _paper_cells_not_run(paper, table: str, ran) -> List[tuple]:
    """The paper's (dataset, backbone, method label) cells of ``table`` for
    methods this project implements, without a run (a blank paper backbone
    matches any)."""
    done = {(d, method_label(m)) for d, _, m in ran}
    done_bb = {(d, b, method_label(m)) for d, b, m in ran}
    return sorted({(r['dataset'], r['backbone'], r['method'])
                   for r in (paper or []) if str(r['table']) == table
                   and r['method'] in {s.label for s in METHODS.values()}}
                  - done_bb - {(d, '', m) for d, m in done})


PAIRED_HEADER = ['Against ERM, paired by seed (mean difference, 95% '
                 'interval, paired t-test):', '',
                 '| dataset | backbone | difference | ours [95% CI] (pairs) '
                 '| p | paper |', '|---|---|---|---|---|---|']


def _paired_lines(cells, table, metric_of, paper) -> List[str]:
    out = _paired_rows(cells, table, metric_of, paper)
    return PAIRED_HEADER + out if out else []


def _paired_rows(cells, table, metric_of, paper) -> List[str]:
    r"""One markdown row per method against ERM of the same dataset and
    backbone in ``cells`` (one table), paired by seed."""
    out = []
    by_ds: Dict[tuple, Dict[str, Dict[int, float]]] = {}
    for (_, dataset, backbone, method, _cid), seeds in cells.items():
        by_ds.setdefault((dataset, backbone), {})[method] = seeds
    for (dataset, backbone), methods in sorted(by_ds.items()):
        if 'erm' not in methods:
            continue
        metric = metric_of[(table, dataset)]
        for method in sorted(methods, key=method_rank):
            if method == 'erm':
                continue
            d = paired_difference(methods[method], methods['erm'])
            if d is None:
                continue
            ours_p = _paper_cell(paper, table, dataset, backbone, method)
            erm_p = _paper_cell(paper, table, dataset, backbone, 'erm')
            paper_d = (_f(ours_p[0] - erm_p[0], metric, signed=True)
                       if ours_p and erm_p else '-')
            out.append(
                f'| {dataset} | {backbone} | {method_label(method)} − ERM | '
                f'{_f(d["mean"], metric, signed=True)} '
                f'[{_f(d["low"], metric, signed=True)}, '
                f'{_f(d["high"], metric, signed=True)}] ({d["n"]}) | '
                f'{d["p"]:.3f} | {paper_d} |')
    return out


def _eval_section(rows, config, metric_of) -> List[str]:
    modes = EVAL_MODES
    compared = {}
    for r in rows:
        if not r['variant'].startswith(config + '/'):
            continue
        scored = r['variant'].split('/', 1)[1]
        key = (str(r['table']), r['dataset'], r['backbone'], r['method'])
        compared.setdefault(key, {}).setdefault(
            (r['selected_by'], scored), {})[int(r['seed'])] = \
            scale_for_table(r['metric'], float(r['test']))
    full = {k: v for k, v in compared.items()
            if all((DEFAULT_EVAL, m) in v for m in modes)
            and all((m, m) in v for m in modes)}
    if not full:
        return []
    out = ['## Evaluation: does the eval batch matter?', '',
           'With HMA\'s attention across datapoints (`inference="batch"`), a '
           'graph\'s eval logits depend on the other graphs of its eval '
           'batch. Raw TU files are sorted by label, so batches in dataset '
           'order (`order`, the released code) are nearly single-class. '
           '`shuffled`: the same attention over batches in a fixed random '
           'order per run; `independent`: each graph attends only to itself, '
           'the slots and the queue (the default). Runs trained with '
           '`--compare-evals`: early stopping followed the default mode, so '
           'the other modes select among the same epochs. Test scores, mean '
           '± std over seeds (n).', '',
           '| dataset | method | selected by | ' + ' | '.join(
               f'scored `{m}`' for m in modes) + ' |',
           '|---|---|---|' + '---|' * len(modes)]
    for key in sorted(full, key=lambda k: (k[0], k[1], method_rank(k[3]))):
        table, dataset, backbone, method = key
        metric = metric_of[(table, dataset)]
        by = full[key]
        if all(v == by[DEFAULT_EVAL, DEFAULT_EVAL] for v in by.values()):
            same = _seeds_cell(by[DEFAULT_EVAL, DEFAULT_EVAL], metric)
            out.append(f'| {dataset} | {method_label(method)} | any (the '
                       f'same in every mode) | ' + ' | '.join(
                           [same] * len(modes)) + ' |')
            continue
        for selected_by, label in ((DEFAULT_EVAL, f'{DEFAULT_EVAL} (the run)'),
                                   *((m, f'{m} (own)') for m in modes
                                     if m != DEFAULT_EVAL)):
            cells = []
            for m in modes:
                seeds = by.get((selected_by, m)) if (
                    selected_by == DEFAULT_EVAL or m == selected_by) else None
                cells.append(_seeds_cell(seeds, metric))
            out.append(f'| {dataset} | {method_label(method)} | {label} | '
                       + ' | '.join(cells) + ' |')
    return out + ['']


def _reference_section(rows, config, metric_of) -> List[str]:
    r"""This project's readout beside the released code's module
    (``reference`` rows), each scored under its own selection."""
    cells: Dict[tuple, Dict[str, Dict[int, float]]] = {}
    for r in rows:
        cfg, scored = r['variant'].split('/', 1)
        if cfg not in (config, 'reference') or scored != r['selected_by']:
            continue
        key = (str(r['table']), r['dataset'], r['method'])
        cells.setdefault(key, {}).setdefault(r['variant'], {})[
            int(r['seed'])] = scale_for_table(r['metric'], float(r['test']))
    keys = [k for k, v in cells.items()
            if any(var.startswith('reference/') for var in v)]
    if not keys:
        return []
    variants = [f'{config}/{m}' for m in EVAL_MODES] + \
        [f'reference/{m}' for m in EVAL_MODES]
    out = ['## Faithfulness: the released code\'s module', '',
           "`reference` = `HMAReadout(style='reference')`, the released "
           "code's HMA module with its defects (docs/hma.md lists the 16 "
           "differences), trained with early stopping on the released "
           "code's evaluation (`order`). Test scores at each mode's own "
           "selection, mean ± std over seeds (n).", '',
           '| dataset | method | ' + ' | '.join(f'`{v}`' for v in variants)
           + ' |', '|---|---|' + '---|' * len(variants)]
    for key in sorted(keys):
        metric = metric_of[key[:2]]
        row = []
        for v in variants:
            row.append(_seeds_cell(cells[key].get(v), metric))
        out.append(f'| {key[1]} | {method_label(key[2])} | '
                   + ' | '.join(row) + ' |')
    return out + ['']


# --------------------------------------------------------------------------
# Sweeps (section 3 of the study: tuned as the paper did)
# --------------------------------------------------------------------------

def sweeps_folder(runs_csv: os.PathLike) -> Path:
    r"""Where committed sweep summaries live (``sweeps/`` beside
    :obj:`runs_csv`): one ``DATASET-METHOD.json`` per sweep, a copy of the
    sweep's ``best.json`` (see :mod:`.sweep`)."""
    return Path(runs_csv).with_name('sweeps')


def read_sweeps(folder: os.PathLike) -> List[dict]:
    r"""The sweep summaries in :obj:`folder` (none when it does not exist),
    sorted by dataset and method."""
    import json
    from .sweep import SWEEP_KIND
    out = []
    for path in sorted(Path(folder).glob('*.json')) if \
            Path(folder).is_dir() else ():
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunsFileError(f"'{path}' is not readable JSON ({e}); "
                                f"copy a sweep's best.json there") from None
        if rec.get('kind') != SWEEP_KIND:
            raise RunsFileError(f"'{path}' is not a sweep summary (kind "
                                f"{rec.get('kind')!r}); copy a sweep's "
                                f"best.json there")
        out.append(rec)
    return sorted(out, key=lambda r: (r['dataset'], method_rank(r['method'])))


def collect_sweeps(folders: Iterable[os.PathLike], runs_csv: os.PathLike
                   ) -> List[str]:
    r"""Commits the sweeps below :obj:`folders` (each a sweep's output
    folder holding ``best.json``, see :mod:`.sweep`): its summary goes to
    :func:`sweeps_folder` as ``DATASET-METHOD.json`` when it holds more
    than the copy there (more finished trials, or the confirmation the copy
    lacks; never fewer), and its confirmation's finished runs
    (``confirm/``) are collected into :obj:`runs_csv` as ``tuned`` rows.

    Returns one line per sweep saying what was done. A summary of another
    sweep than the copy (other space, seeds or runner options) raises
    :class:`RunsFileError` before anything is written."""
    import json
    from .results import write_json
    from .sweep import SUMMARY_IDENTITY, SWEEP_KIND, summary_differences
    target = sweeps_folder(runs_csv)
    plan = []
    for folder in folders:
        for path in sorted(Path(folder).rglob('best.json')):
            try:
                new = json.loads(path.read_text())
            except (OSError, ValueError) as e:
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
            added, kept = collect([confirm], runs_csv, 'tuned')
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


def _sweep_grid(sweep: dict) -> Optional[dict]:
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


def _tuning_section(sweeps, rows, config, metric_of, figures,
                    paper=None) -> List[str]:
    if not sweeps:
        return []
    main = _cells(rows, f'{config}/{DEFAULT_EVAL}', DEFAULT_EVAL)
    tuned = _cells(rows, f'tuned/{DEFAULT_EVAL}', DEFAULT_EVAL)
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
        best_cell = (f"{params}: {_f(scale_for_table(metric, best['val_mean']), metric)}"
                     if best else '-')
        conf_cell = _seeds_cell(dict(enumerate(
            scale_for_table(metric, v) for v in conf['test'])), metric) \
            if conf else 'not yet'
        published = [v for k, v in main.items()
                     if k[1] == sw['dataset'] and k[3] == sw['method']]
        pub_cell = _seeds_cell(published[0], metric) if published else '-'
        table, backbone = where.get(sw['dataset'], ('', ''))
        cell = _paper_cell(paper, table, sw['dataset'], backbone,
                           sw['method'])
        paper_cell = (f'{_f(cell[0], metric)} ± {_f(cell[1], metric)}'
                      if cell else '-')
        verdict_cell = verdict([scale_for_table(metric, v)
                                for v in conf['test']],
                               cell[0] if cell else None) if conf else '-'
        out.append(f"| {sw['dataset']} | {method_label(sw['method'])} | "
                   f"{len(sw['trials'])} / {sw['num_trials']} | {best_cell} "
                   f"| {conf_cell} | {pub_cell} | {paper_cell} | "
                   f"{verdict_cell} |")
    out.append('')
    paired = []
    for table in sorted({k[0] for k in tuned}):
        paired += _paired_rows({k: v for k, v in tuned.items()
                                if k[0] == table}, table, metric_of, paper)
    if paired:
        out += ['Tuned HMA against tuned ERM (each with its own best '
                'configuration, the same confirmation seeds), paired by '
                'seed:', ''] + PAIRED_HEADER[2:] + paired + ['']
    for dataset in sorted({sw['dataset'] for sw in sweeps}):
        if figures and f'sweep:{dataset}' in figures:
            out += [f"![sweep {dataset}]({figures[f'sweep:{dataset}']})", '']
    return out


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------

#: The curves figure: ERM and HMA on one size-shift and one degree-shift
#: dataset.
CURVE_CELLS = (('6', 'NCI1'), ('5', 'Graph-SST5'))
CURVE_METHODS = ('erm', 'hma')


def _curve_panels(rows, curves, config) -> list:
    runs = {}
    for r in rows:
        if (r['variant'] == f'{config}/{DEFAULT_EVAL}'
                and r['selected_by'] == DEFAULT_EVAL
                and _drawn(str(r['table']), r['dataset'], r['method'])):
            runs[r['fingerprint'], str(r['seed'])] = r
    series: Dict[tuple, dict] = {}
    for c in curves:
        run = runs.get((c['fingerprint'], str(c['seed'])))
        if run is None:
            continue
        for split in ('val', 'test'):
            if c[split] == '':
                continue
            value = scale_for_table(run['metric'], float(c[split]))
            series.setdefault((run['table'], run['dataset'], run['metric'],
                               split), {}).setdefault(
                method_label(run['method']), {}).setdefault(
                int(run['seed']), []).append((int(c['epoch']), value))
    panels = []
    for (table, dataset, metric, split), by_method in sorted(
            series.items(), key=lambda kv: (
                CURVE_CELLS.index((str(kv[0][0]), kv[0][1])), kv[0][3] != 'val')):
        for seeds in by_method.values():
            for points in seeds.values():
                points.sort()
        panels.append((f'{dataset} ({TABLE_TITLES[int(table)].split(":")[0]})'
                       f': {"validation" if split == "val" else "test"}',
                       METRIC_LABELS.get(metric, metric), by_method))
    return panels


def write_figures(rows, paper, folder: Path, config: str,
                  relative_to: Path, curves: Sequence[dict] = (),
                  sweeps: Sequence[dict] = ()) -> Dict[str, str]:
    r"""The report's PNGs in :obj:`folder`: one per paper table (ours with
    95% intervals beside the paper's mean ± std), the validation/test curves
    (``curves``) and one heatmap per swept dataset (``sweep:DATASET``).
    Returns ``{key: path relative to the report}``."""
    from . import figures as fig
    main = _cells(rows, f'{config}/{DEFAULT_EVAL}', DEFAULT_EVAL)
    out = {}

    def done(key, path):
        out[key] = os.path.relpath(path, relative_to)

    for table in sorted({k[0] for k in main if k[0]}):
        keys = sorted((k for k in main if k[0] == table),
                      key=lambda k: (k[1], method_rank(k[3])))
        labels, ours, ours_err, theirs, theirs_err = [], [], [], [], []
        for key in keys:
            mean, _, half, _ = mean_interval(list(main[key].values()))
            cell = _paper_cell(paper, table, key[1], key[2], key[3])
            labels.append(f'{key[1]}\n{method_label(key[3])}')
            ours.append(mean)
            ours_err.append(0 if not math.isfinite(half) else half)
            theirs.append(cell[0] if cell else math.nan)
            theirs_err.append(cell[1] if cell else 0)
        metric = next(r['metric'] for r in rows if str(r['table']) == table)
        path = folder / f'table{table}.png'
        fig.table_figure(path, TABLE_TITLES.get(int(table), f'Table {table}'),
                         METRIC_LABELS.get(metric, metric), labels, ours,
                         ours_err, theirs, theirs_err)
        done(table, path)
    panels = _curve_panels(rows, curves, config)
    if panels:
        path = folder / 'curves.png'
        fig.curves_figure(path, panels)
        done('curves', path)
    for dataset in sorted({sw['dataset'] for sw in sweeps}):
        grids = [g for g in (_sweep_grid(sw) for sw in sweeps
                             if sw['dataset'] == dataset) if g]
        if grids:
            path = folder / f'sweep_{dataset}.png'
            fig.heatmap_figure(path, grids)
            done(f'sweep:{dataset}', path)
    return out


def report(runs_csv: os.PathLike, paper: Optional[List[dict]],
           out: Optional[os.PathLike] = None, config: str = 'published',
           figures_dir: Optional[os.PathLike] = None) -> str:
    r"""Builds the report from :obj:`runs_csv`, the curves and sweep
    summaries beside it (and figures into :obj:`figures_dir` when given);
    writes it to :obj:`out` atomically."""
    rows = read_runs(runs_csv)
    if not rows:
        raise RunsFileError(f"no runs in '{runs_csv}': collect results first "
                            f"(python benchmarks/reproduction.py collect)")
    sweeps = read_sweeps(sweeps_folder(runs_csv))
    figures = None
    if figures_dir is not None and out is not None:
        figures = write_figures(rows, paper, Path(figures_dir), config,
                                relative_to=Path(out).parent,
                                curves=read_curves(curves_path(runs_csv)),
                                sweeps=sweeps)
    text = report_markdown(rows, paper, config, figures, sweeps)
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(text)
    return text
