r"""The reproduction study's committed rows: ``results/paper/runs.csv``.

Finished runs (one JSON per method and seed, see
:mod:`pyg_hma.train.results`) are *collected* into one small CSV,
``results/paper/runs.csv``, one row per run and eval setting, so that the
report (:mod:`.report`) regenerates from committed files without
retraining:

.. code-block:: text

    table,dataset,backbone,method,variant,selected_by,seed,metric,val,test,
    selected_epoch,epochs,seconds,device,config_id,fingerprint,commit,engine

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

* ``engine`` is the version of the training engine that produced the row
  (:data:`~pyg_hma.train.results.ENGINE_VERSIONS`): recorded by the run, or
  found from its commit for results from before it was recorded. A seed
  trained again by a newer engine is another row: the report shows each
  engine's rows as their own cell, never averaged together.

Rows are identified by ``(fingerprint, seed, variant, selected_by, engine)``
(:data:`~pyg_hma.train.results.ROW_KEY`); collecting again never changes a
row that is already there. Beside it, ``curves.csv`` keeps the per-epoch
training loss and validation/test scores of the runs the curves figure
draws (a run is :func:`run_of`), and ``sweeps/DATASET-METHOD.json`` the
summaries of the study's sweeps (:mod:`.tuning`).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ..files import atomic_path
from ..train.results import (CURVES_COLUMNS, ROW_KEY, RUNS_COLUMNS,
                             RUNS_CONFIG_ID, config_id, engine_of_commit,
                             find_results, in_sweep, method_rank,
                             read_curves, read_runs)
from .integrity import IntegrityError, check_records, check_rows, same_row

DEFAULT_EVAL = 'independent'
CONFIGS = ('published', 'tuned', 'reference')

#: The curves figure: ERM and HMA on one size-shift and one degree-shift
#: dataset.
CURVE_CELLS = (('6', 'NCI1'), ('5', 'Graph-SST5'))
CURVE_METHODS = ('erm', 'hma')


def engine_of_result(rec: dict, checkout: os.PathLike = '.') -> int:
    r"""The engine version that trained a result record: its ``engine``
    field, or for results from before it was recorded, the version of its
    commit in the git checkout :obj:`checkout`
    (:func:`~pyg_hma.train.results.engine_of_commit`). Raises
    :class:`~.integrity.IntegrityError` when neither tells."""
    if rec.get('engine') is not None:
        return int(rec['engine'])
    found = engine_of_commit(rec.get('commit') or '', str(checkout))
    if found is None:
        raise IntegrityError(
            f"{rec.get('_path', 'a result')}: records no engine version and "
            f"its commit '{rec.get('commit') or ''}' is not in the history "
            f"of '{checkout}': collect it in the checkout that trained it")
    return found


def rows_of_result(rec: dict, config: str = 'published',
                   checkout: os.PathLike = '.') -> List[dict]:
    r"""The ``runs.csv`` rows of one result record (a run's JSON);
    :obj:`checkout` finds the engine version of a result that does not
    record it (:func:`engine_of_result`)."""
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS} (got '{config}')")
    primary = rec['primary_test']
    own = rec.get('eval_mode', 'order')  # results before eval modes: order
    common = dict(
        table=rec.get('table') if rec.get('table') is not None else '',
        dataset=rec['dataset'], backbone=rec['backbone_label'],
        method=rec['method'], seed=rec['seed'], metric=rec['metric'],
        epochs=rec['epochs_run'], seconds=round(rec['wall_time_s'], 1),
        config_id=config_id(rec, length=RUNS_CONFIG_ID),
        device=rec.get('device_name') or rec.get('device'),
        fingerprint=rec['run_fingerprint'], commit=rec.get('commit') or '',
        engine=engine_of_result(rec, checkout))

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


def curve_rows_of_result(rec: dict, engine: int) -> List[dict]:
    r"""The ``curves.csv`` rows of one result record (trained by the engine
    version :obj:`engine`): per epoch, the training loss and the validation
    and primary test scores under the run's own eval mode (6 significant
    digits; empty when not finite)."""
    primary = rec['primary_test']

    def short(value) -> str:
        return f'{value:.6g}' if isinstance(value, (int, float)) and \
            math.isfinite(value) else ''
    return [dict(fingerprint=rec['run_fingerprint'], seed=rec['seed'],
                 engine=engine, epoch=h['epoch'],
                 train_loss=short(h.get('train_loss')),
                 val=short(h.get('val')),
                 test=short((h.get('test') or {}).get(primary)))
            for h in rec.get('history') or ()]


def curves_path(runs_csv: os.PathLike) -> Path:
    r"""Where the curves of :obj:`runs_csv` live (``curves.csv`` beside)."""
    return Path(runs_csv).with_name('curves.csv')


def write_csv(path: os.PathLike, columns: Sequence[str], rows) -> None:
    r"""Writes :obj:`rows` (their :obj:`columns`) as CSV, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=columns,
                                    lineterminator='\n')
            writer.writeheader()
            writer.writerows({k: r[k] for k in columns} for r in rows)


def run_of(row: dict) -> tuple:
    r"""The run a ``runs.csv`` or ``curves.csv`` row belongs to:
    ``(fingerprint, seed, engine)``."""
    return row['fingerprint'], str(row['seed']), str(row['engine'])


def _key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in ROW_KEY)


def _found(folders: List[Path], skipped: List[Tuple[str, str]]
           ) -> List[dict]:
    r"""The finished, non-quick runs below :obj:`folders` that are not a
    sweep's; every other file found goes to :obj:`skipped` with the
    reason."""
    def leave_out(rec, path):
        if rec.get('quick'):
            return 'a --quick run (not a result)'
        if in_sweep(path, folders):
            return ("a sweep's run (collect its confirm/ folder or use "
                    "`sweeps`)")
        return None
    broken, duplicates, conflicts, ignored = [], [], [], []
    records = find_results(folders, broken, duplicates, conflicts, ignored,
                           leave_out)
    check_records([], conflicts)  # one run with two sets of scores: stop
    skipped += broken + ignored
    skipped += [(path, f'the same run as {first} (counted once)')
                for path, first in duplicates]
    return records


def collect(folders: Iterable[os.PathLike], runs_csv: os.PathLike,
            config: str = 'published',
            skipped: Optional[List[Tuple[str, str]]] = None
            ) -> Tuple[int, int]:
    r"""Adds the rows of every finished, non-quick run under
    :obj:`folders` to :obj:`runs_csv` (written atomically). A sweep's runs
    found below a folder (its trials ran other settings) are left out; name
    its ``confirm`` folder, or use :func:`collect_sweeps`. Every file found
    and not collected goes to :obj:`skipped` as ``(path, reason)``
    (broken or truncated JSON, a file that is no result, a copy of a run
    found twice, a quick run, a sweep's run).

    Returns ``(rows added, rows already there)``. A row whose key is present
    with other values, two rows that disagree, or a non-finite score raise
    :class:`~.integrity.IntegrityError` and write nothing.
    The per-epoch curves of the runs the curves figure draws
    (:data:`CURVE_CELLS` x :data:`CURVE_METHODS`) are added to
    :func:`curves_path` (a run whose curves are there already is left as it
    is); other runs' curves are not kept (800-epoch runs would make the file
    grow by megabytes for nothing).
    """
    existing = read_runs(runs_csv)
    check_rows([(f'{runs_csv}:{i + 2}', r) for i, r in enumerate(existing)])
    index = {_key(r): r for r in existing}
    added: List[Tuple[str, dict]] = []
    kept = 0
    old_curves = read_curves(curves_path(runs_csv))
    have_curves = {run_of(r) for r in old_curves}
    new_curves: List[dict] = []
    for rec in _found([Path(f) for f in folders],
                      [] if skipped is None else skipped):
        rows = rows_of_result(rec, config, Path(runs_csv).resolve().parent)
        if drawn(str(rec.get('table')), rec['dataset'], rec['method']) \
                and run_of(rows[0]) not in have_curves:
            have_curves.add(run_of(rows[0]))
            new_curves += curve_rows_of_result(rec, rows[0]['engine'])
        for row in rows:
            old = index.get(_key(row))
            if old is None:
                index[_key(row)] = row
                added.append((rec['_path'], row))
            elif same_row(old, row):
                kept += 1
            elif any(old is r for _, r in added):
                raise IntegrityError(
                    f"{rec['_path']} and another file give the row "
                    f"{_key(row)} different values (see "
                    f"{next(w for w, r in added if r is old)}); never "
                    f"averaged or replaced: keep the right one")
            else:
                raise IntegrityError(
                    f"{rec['_path']}: its row {_key(row)} is already in "
                    f"'{runs_csv}' with other values; the committed row is "
                    f"never changed (collect into another file to compare)")
    check_rows([(f'{runs_csv}:{i + 2}', r) for i, r in enumerate(existing)]
               + added)
    if added:
        rows = existing + [r for _, r in added]
        rows.sort(key=lambda r: (str(r['table']), r['dataset'],
                                 r['backbone'], method_rank(r['method']),
                                 r['variant'], r['selected_by'],
                                 int(r['seed']), r['fingerprint']))
        write_csv(runs_csv, RUNS_COLUMNS, rows)
    shown = {run_of(r) for r in index.values()
             if drawn(str(r['table']), r['dataset'], r['method'])}
    kept_curves = [c for c in old_curves if run_of(c) in shown]
    if new_curves or len(kept_curves) < len(old_curves):
        write_csv(curves_path(runs_csv), CURVES_COLUMNS,
                  kept_curves + new_curves)
    return len(added), kept


def drawn(table: str, dataset: str, method: str) -> bool:
    r"""Whether the curves figure draws runs of this cell and method."""
    return (table, dataset) in CURVE_CELLS and method in CURVE_METHODS

