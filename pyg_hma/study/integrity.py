r"""What the study's commands refuse to average: rows (or result files)
that disagree, and scores that are not finite.

Two rows with the same key and different values, or a row whose validation
or test score is not a finite number, stop ``collect``, ``report`` and
``benchmarks/report.py`` with :class:`IntegrityError` (one line naming the
rows): neither is ever averaged, nor decided by "last row wins" or by the
order of the arguments. Identical copies of one row are one row.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

from ..train.results import (ROW_KEY, RUNS_COLUMNS, RunsFileError,
                             config_id)

#: What identifies a seed of a report cell: two rows here with different
#: scores would be averaged (or one silently dropped) by the report. Rows
#: of another engine version are another cell (:func:`.cells.cell_key`).
CELL_KEY = ('table', 'dataset', 'backbone', 'method', 'config_id',
            'engine', 'variant', 'selected_by', 'seed')
#: The scores of a row.
SCORES = ('val', 'test')
#: Rows named in full in one error line; the rest are counted.
NAMED = 4


class IntegrityError(RunsFileError):
    r"""Rows or result files that disagree, or a non-finite score."""


def finite(value) -> bool:
    r"""Whether :obj:`value` (a number or its CSV text) is a finite
    number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _same_value(x, y) -> bool:
    x, y = str(x), str(y)
    if x == y:
        return True
    try:  # numbers that went through CSV text
        return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)
    except ValueError:
        return False


def same_row(a: dict, b: dict, columns: Sequence[str] = RUNS_COLUMNS
             ) -> bool:
    r"""Whether two ``runs.csv`` rows hold the same values."""
    return all(_same_value(a[c], b[c]) for c in columns)


def _listing(items: Sequence[str]) -> str:
    more = len(items) - NAMED
    return '; '.join(items[:NAMED]) + (f'; and {more} more' if more > 0
                                       else '')


def _row_text(row: dict) -> str:
    return (f"{row['dataset']} {row['backbone']} {row['method']} seed "
            f"{row['seed']} {row['variant']}/{row['selected_by']}")


def check_rows(rows: Sequence[Tuple[str, dict]]) -> List[dict]:
    r"""Checks ``runs.csv`` rows, each given with where it comes from
    (``'runs.csv:12'``, or a result file); returns them with identical
    copies of a row counted once. Raises :class:`IntegrityError` for a
    non-finite score or for two rows with the same key
    (:data:`~pyg_hma.train.results.ROW_KEY`, or a report cell's seed,
    :data:`CELL_KEY`) and different values."""
    bad = [f"{where} ({_row_text(row)}: "
           + ', '.join(f'{c} {row[c]!s}' for c in SCORES
                       if not finite(row[c])) + ')'
           for where, row in rows if not all(finite(row[c]) for c in SCORES)]
    if bad:
        raise IntegrityError(f'non-finite score in {len(bad)} row(s), never '
                             f'averaged: {_listing(bad)}')
    out: List[dict] = []
    by_key: Dict[tuple, Tuple[str, dict]] = {}
    by_cell: Dict[tuple, Tuple[str, dict]] = {}
    clashes: List[str] = []
    for where, row in rows:
        key = tuple(str(row[k]) for k in ROW_KEY)
        first = by_key.get(key)
        if first is not None:
            if not same_row(first[1], row):
                differ = [c for c in RUNS_COLUMNS
                          if not _same_value(first[1][c], row[c])]
                clashes.append(f"{first[0]} and {where} ({_row_text(row)}, "
                               f"fingerprint {row['fingerprint']}): "
                               + ', '.join(f'{c} {first[1][c]} vs {row[c]}'
                                           for c in differ))
            continue  # an identical copy: one row
        by_key[key] = (where, row)
        cell = tuple(str(row[k]) for k in CELL_KEY)
        first = by_cell.get(cell)
        if first is not None:
            if not all(_same_value(first[1][c], row[c]) for c in SCORES):
                clashes.append(
                    f"{first[0]} and {where} ({_row_text(row)}, config "
                    f"{row['config_id']}): "
                    + ', '.join(f'{c} {first[1][c]} vs {row[c]}'
                                for c in SCORES))
            continue
        by_cell[cell] = (where, row)
        out.append(row)
    if clashes:
        raise IntegrityError(
            f'{len(clashes)} pair(s) of rows with the same key and different '
            f'values, never averaged or replaced: {_listing(clashes)}; keep '
            f'the right one')
    return out


def _primary(rec: dict):
    return (rec.get('test') or {}).get(rec.get('primary_test'))


def check_records(records: Sequence[dict],
                  conflicts: Sequence[Tuple[str, str]] = ()) -> None:
    r"""Checks result records (``find_results``) before a report averages
    them: :obj:`conflicts` (files of one run with other scores, from
    ``find_results``), a non-finite validation or primary test score, and
    two runs of one configuration and seed with different scores each
    stop with :class:`IntegrityError`."""
    if conflicts:
        raise IntegrityError(
            f'{len(conflicts)} result file(s) hold a run found elsewhere '
            f'with other scores (same fingerprint), never averaged or '
            f'chosen by argument order: '
            + _listing([f'{a} vs {b}' for a, b in conflicts]))
    bad = [f"{r['_path']} (val {r['val']}, {r['primary_test']} "
           f"{_primary(r)})" for r in records
           if not (finite(r['val']) and finite(_primary(r)))]
    if bad:
        raise IntegrityError(f'non-finite score in {len(bad)} result '
                             f'file(s), never averaged: {_listing(bad)}')
    seen: Dict[tuple, dict] = {}
    clashes = []
    for rec in records:
        # Across engine versions too: a report of result files has one cell
        # per configuration, and two runs of a seed would be averaged.
        key = (rec.get('table'), rec['dataset'], rec.get('backbone_label'),
               rec['method'], config_id(rec), rec['seed'])
        first = seen.setdefault(key, rec)
        if first is not rec:
            clashes.append(f"{first['_path']} and {rec['_path']} "
                           f"({rec['dataset']} {rec['method']} seed "
                           f"{rec['seed']}: test {_primary(first)} vs "
                           f"{_primary(rec)})")
    if clashes:
        raise IntegrityError(
            f'{len(clashes)} pair(s) of runs of one configuration and seed '
            f'(different fingerprints or engine versions), never averaged: '
            f'{_listing(clashes)}')
