r"""Result records: the per-seed result files, the committed study rows
(``runs.csv``), summaries over seeds and the paper's published numbers.

This module sits below the runners, which write result files and read
committed rows (``--skip-committed``), and below the reproduction study
(:mod:`pyg_hma.study`), which collects them into rows and reports on them.

Every finished run (one method, one seed) is one JSON file with
``"kind": "pyg_hma.result"``. Summaries group them by
``(table, dataset, backbone, method)`` and give mean ± standard deviation
over seeds (sample standard deviation, ``ddof=1``) of the test score at the
best-validation epoch, on the paper's scale (ROC-AUC and accuracy in
percent, MCC raw), next to the paper's number labelled "paper".

The paper's numbers are read from ``$PYG_HMA_PAPER`` or, by default,
``../shared/paper/graph_results.csv`` beside the working directory (columns
``table,metric,dataset,backbone,method,mean,std``). When neither exists the
paper column is left out and the summary says so.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import platform
from collections import OrderedDict
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple)

from ..files import atomic_path, shared_dir
from ..methods import METHODS, method_label
from ..models.backbones import backbone_label
from .metrics import METRIC_LABELS, scale_for_table

RESULT_KIND = 'pyg_hma.result'
RESULT_FORMAT = 1
PAPER_ENV = 'PYG_HMA_PAPER'
#: Where a summary finds the reproduction study's committed rows (default
#: ``results/paper/runs.csv`` under the working directory).
RUNS_ENV = 'PYG_HMA_RUNS'
#: Length of ``runs.csv``'s ``config_id`` (see :func:`config_id`).
RUNS_CONFIG_ID = 10


def method_rank(method: str) -> int:
    r"""Position of :obj:`method` in table rows (registry order; unknown
    names last)."""
    names = list(METHODS)
    return names.index(method) if method in names else len(names)


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def package_versions() -> Dict[str, Optional[str]]:
    r"""Versions of the packages that determine a result."""
    from importlib import metadata
    out: Dict[str, Optional[str]] = {'python': platform.python_version()}
    for name in ('pyg_hma', 'torch', 'torch_geometric', 'numpy',
                 'scikit-learn', 'ogb', 'rdkit'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    import torch
    # The build tag (+cpu, +cu130) matters and is not always in the wheel's
    # metadata (PyPI's CUDA wheels say 2.11.0; torch.__version__ 2.11.0+cu130).
    out['torch'] = str(torch.__version__)
    out['torch_cuda'] = torch.version.cuda
    return out


#: The training engine's versions: ``(version, first commit, what
#: changed)``. The version goes up when the same configuration and seed
#: start to give other numbers (the fingerprints name what was asked, not
#: the code's rounding); every result records the version that trained it
#: (``engine``), and the study keeps rows of different versions apart.
ENGINE_VERSIONS = (
    (1, '', 'the first engine: a run alone took torch\'s global random '
     'stream; a seed-batched group drew its streams as a group'),
    (2, '52c09c2ea7623128cfdc95a6c9344a05e920eb0b',
     "every run takes its seed's own streams: alone = in any group, except "
     'where a kernel rounded a seed differently in its group'),
    (3, 'c9e8586f44064ac431132c2ab790cb3933d975b4',
     'the kernels that rounded a seed differently in its group (batches of '
     'about 160-376 nodes, a one-column head, the CNN) run per seed'),
)
#: The engine version of today's code.
ENGINE_VERSION = ENGINE_VERSIONS[-1][0]


@functools.lru_cache(maxsize=None)
def engine_of_commit(commit: Optional[str], checkout: str = '.'
                     ) -> Optional[int]:
    r"""The engine version (:data:`ENGINE_VERSIONS`) of the code at
    :obj:`commit` (``+dirty`` ignored): the newest version whose first
    commit is :obj:`commit` or one of its ancestors in the git checkout
    :obj:`checkout`; ``None`` when the commit is empty or not in that
    history (results from before the ``engine`` field was recorded)."""
    import subprocess
    sha = (commit or '').split('+')[0]
    if not sha:
        return None
    version = None
    for number, first, _ in ENGINE_VERSIONS:
        if not first:
            version = number
            continue
        try:
            res = subprocess.run(['git', '-C', checkout, 'merge-base',
                                  '--is-ancestor', first, sha],
                                 capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        if res.returncode == 0:
            version = number
        elif res.returncode != 1:  # an unknown commit, or no checkout
            return None
    return version


def source_commit() -> Optional[str]:
    r"""The git commit of the code that runs (``+dirty`` when the package or
    the runners have uncommitted changes), or ``None`` outside a git
    checkout (e.g. an installed wheel)."""
    import subprocess
    # The code that runs: the git checkout holding this package (an
    # installed wheel is in none: None).
    here = str(Path(__file__).resolve().parent)
    try:
        top = subprocess.run(['git', '-C', here, 'rev-parse',
                              '--show-toplevel'],
                             capture_output=True, text=True, timeout=10)
        if top.returncode != 0:
            return None
        root = top.stdout.strip()
        tracked = subprocess.run(  # not a wheel inside some other checkout
            ['git', '-C', root, 'ls-files', '--error-unmatch',
             str(Path(__file__).resolve())],
            capture_output=True, text=True, timeout=10)
        if tracked.returncode != 0:
            return None
        head = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ['git', '-C', root, 'status', '--porcelain', '--untracked-files=no',
             '--', 'pyg_hma', 'benchmarks'],
            capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')


def write_json(path: os.PathLike, obj: Any):
    r"""Writes :obj:`obj` as JSON atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1, sort_keys=False, default=_jsonable)
            f.write('\n')


def _jsonable(obj):
    if hasattr(obj, 'item'):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f'{type(obj).__name__} is not JSON serialisable')


#: Fields every result needs to be summarised.
REQUIRED_FIELDS = ('dataset', 'backbone', 'method', 'seed', 'metric', 'val',
                   'test', 'primary_test', 'run_fingerprint',
                   'selected_epoch', 'epochs_run', 'wall_time_s')


def result_problem(path: os.PathLike) -> Tuple[Optional[dict], Optional[str]]:
    r"""``(record, None)`` for a complete result file, ``(None, reason)``
    for a broken one, ``(None, None)`` for a file that is no result."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except OSError as e:
        return None, f'unreadable ({e.strerror})'
    except ValueError:
        return None, 'not valid JSON (truncated or corrupt)'
    except RecursionError:  # e.g. [[[[...]]]] 200,000 deep
        return None, 'not valid JSON (nested too deeply to be a result)'
    if not isinstance(rec, dict) or rec.get('kind') != RESULT_KIND:
        return None, None
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        return None, f"lacks {', '.join(missing)}"
    if not isinstance(rec['test'], dict) or \
            rec['primary_test'] not in rec['test']:
        return None, 'its test scores lack the primary test split'
    return rec, None


def read_result(path: os.PathLike) -> Optional[dict]:
    r"""The result in :obj:`path`, or ``None`` when it is not a complete
    result file of this package."""
    return result_problem(path)[0]


def in_sweep(path: os.PathLike, folders: Iterable[os.PathLike]) -> bool:
    r"""Whether :obj:`path` is reached from each given folder holding it
    only through a sweep's folder (one with a ``study.db``,
    :mod:`.sweep`): its trials and confirmation ran other settings than the
    protocol's and would mix with the protocol's runs. Name a sweep's
    ``confirm`` folder to reach its confirmation."""
    path = Path(path).resolve()
    verdicts = []
    for folder in folders:
        top = Path(folder).resolve()
        ups = list(path.parents)
        if top in ups:
            verdicts.append(any((p / 'study.db').is_file()
                                for p in ups[:ups.index(top) + 1]))
    return bool(verdicts) and all(verdicts)


def find_results(folders: Iterable[os.PathLike],
                 skipped: Optional[List[Tuple[str, str]]] = None,
                 duplicates: Optional[List[Tuple[str, str]]] = None,
                 conflicts: Optional[List[Tuple[str, str]]] = None,
                 ignored: Optional[List[Tuple[str, str]]] = None,
                 leave_out: Optional[Callable[[dict, Path], Optional[str]]]
                 = None) -> List[dict]:
    r"""The result files below :obj:`folders` (recursively), each with its
    path under ``'_path'``, each run once.

    Hidden and temporary folders (``.superseded``, ``.NAME.tmp``) are not
    searched. Broken files named like results (``seed*.json``) or marked as
    results go to :obj:`skipped` as ``(path, reason)``; a run found again
    (same fingerprint and engine version) goes to :obj:`duplicates` as
    ``(path, first path)``
    and is counted once. When :obj:`conflicts` is given, a run found again
    with other scores goes there instead of :obj:`duplicates` (which copy
    is right is not this function's to guess). Every other JSON file that
    is not read as a result goes to :obj:`ignored` as ``(path, reason)``,
    and so does a result for which :obj:`leave_out` (called with the
    record and its path) gives a reason, before runs are matched by
    fingerprint.
    """
    out: List[dict] = []
    seen: Dict[tuple, str] = {}
    seen_rec: Dict[str, dict] = {}
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            files = [folder]
        else:
            files = sorted(
                f for f in folder.rglob('*.json')
                if not any(part.startswith('.')
                           for part in f.relative_to(folder).parts))
        for file in files:
            rec, problem = result_problem(file)
            if rec is None:
                if problem and (file.name.startswith('seed') or
                                problem.startswith('lacks')):
                    if skipped is not None:
                        skipped.append((str(file), problem))
                elif ignored is not None:
                    ignored.append((str(file), problem or
                                    'not a result file of this package'))
                continue
            reason = leave_out(rec, file) if leave_out is not None else None
            if reason:
                if ignored is not None:
                    ignored.append((str(file), reason))
                continue
            # A run of another engine version is another run.
            run = (rec['run_fingerprint'], rec.get('engine'))
            first = seen.get(run)
            if first is not None:
                if conflicts is not None and \
                        _scores(rec) != _scores(seen_rec[first]):
                    conflicts.append((str(file), first))
                elif duplicates is not None:
                    duplicates.append((str(file), first))
                continue
            seen[run] = str(file)
            seen_rec[str(file)] = rec
            rec['_path'] = str(file)
            out.append(rec)
    return out


def _scores(rec: dict) -> str:
    # A run's scores as text (NaN equals NaN here).
    return json.dumps([rec.get('val'), rec.get('test'),
                       rec.get('selected_epoch')], sort_keys=True,
                      default=str)


def config_id(rec: dict, config: Optional[dict] = None,
              length: int = 8) -> str:
    r"""Identifies a result's configuration apart from its seed: results
    of different configurations are never averaged together. With
    :obj:`config`, the id of the same run under that ``config`` entry;
    ``runs.csv``'s ``config_id`` is the first :data:`RUNS_CONFIG_ID`
    characters."""
    text = json.dumps({**{k: rec.get(k) for k in (
        'runner', 'dataset', 'backbone', 'method')},
        'config': rec.get('config') if config is None else config},
        sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# --------------------------------------------------------------------------
# Committed study rows (runs.csv, curves.csv)
# --------------------------------------------------------------------------

#: The columns of ``runs.csv``: one row per run and eval setting (see
#: :mod:`pyg_hma.study.rows`).
RUNS_COLUMNS = ('table', 'dataset', 'backbone', 'method', 'variant',
                'selected_by', 'seed', 'metric', 'val', 'test',
                'selected_epoch', 'epochs', 'seconds', 'device',
                'config_id', 'fingerprint', 'commit', 'engine')
#: What identifies a row of ``runs.csv``: a run of another engine version
#: (:data:`ENGINE_VERSIONS`) is another row.
ROW_KEY = ('fingerprint', 'seed', 'variant', 'selected_by', 'engine')
#: Per-epoch curves beside ``runs.csv`` (``curves.csv``): one row per run
#: and epoch, the run's own eval mode; joined to the runs by
#: ``(fingerprint, seed, engine)``.
CURVES_COLUMNS = ('fingerprint', 'seed', 'engine', 'epoch', 'train_loss',
                  'val', 'test')


class RunsFileError(ValueError):
    r"""``runs.csv`` is malformed or a collection would change a row."""


def read_csv_rows(path: os.PathLike, columns: Sequence[str], what: str
                  ) -> List[dict]:
    r"""The rows of a CSV file that must hold :obj:`columns` (empty when
    the file does not exist); :class:`RunsFileError` otherwise."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            missing = set(columns) - set(reader.fieldnames or ())
            if missing:
                raise RunsFileError(f"'{path}' lacks the columns "
                                    f"{sorted(missing)}; it is not a {what} "
                                    f"of this project")
            return [dict(r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RunsFileError(f"'{path}' is not a readable {what} ({e})"
                            ) from None


def read_runs(path: os.PathLike) -> List[dict]:
    r"""The rows of a ``runs.csv`` (empty when the file does not exist)."""
    return read_csv_rows(path, RUNS_COLUMNS, 'runs.csv')


def read_curves(path: os.PathLike) -> List[dict]:
    r"""The rows of a ``curves.csv`` (empty when the file does not exist)."""
    return read_csv_rows(path, CURVES_COLUMNS, 'curves.csv')


# --------------------------------------------------------------------------
# Paper numbers
# --------------------------------------------------------------------------

def paper_csv_path() -> Path:
    env = os.environ.get(PAPER_ENV)
    if env:
        return Path(env).expanduser()
    return shared_dir() / 'paper' / 'graph_results.csv'


def load_paper(path: Optional[os.PathLike] = None) -> Optional[List[dict]]:
    r"""The paper's rows, or ``None`` when the file does not exist."""
    path = Path(path) if path is not None else paper_csv_path()
    if not path.is_file():
        return None
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    need = {'table', 'metric', 'dataset', 'backbone', 'method', 'mean', 'std'}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"'{path}' lacks columns "
                         f"{sorted(need - set(rows[0]))}")
    return rows


def paper_number(paper: Optional[List[dict]], table: Optional[int],
                 dataset: str, backbone: str, method: str
                 ) -> Optional[Tuple[float, float]]:
    r"""The paper's ``(mean, std)`` for one cell, or ``None``.

    Args:
        backbone: the paper's backbone label (e.g. ``'GIN-v'``); table 6
            lists no backbone and matches any.
        method: the paper's method label (e.g. ``'V-REx'``).
    """
    if paper is None or table is None:
        return None
    for row in paper:
        if (int(row['table']) == int(table) and row['dataset'] == dataset
                and row['method'] == method
                and row['backbone'] in ('', backbone)):
            return float(row['mean']), float(row['std'])
    return None


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    r"""Mean and sample std of the finite values (non-finite ones are
    counted by :func:`aggregate` and shown beside the score)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float('nan'), float('nan')
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, float('nan')
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def _group_key(rec: dict) -> tuple:
    return (rec.get('table'), rec['dataset'], rec['backbone_label'],
            rec['method'], config_id(rec))


def aggregate(records: Sequence[dict], paper: Optional[List[dict]] = None
              ) -> List[dict]:
    r"""One summary row per ``(table, dataset, backbone, method)``, scores
    on the paper's scale."""
    groups: Dict[tuple, List[dict]] = OrderedDict()
    for rec in sorted(records, key=lambda r: (
            str(r.get('table')), r['dataset'], r['backbone_label'],
            method_rank(r['method']), r['seed'])):
        groups.setdefault(_group_key(rec), []).append(rec)
    configs: Dict[tuple, int] = {}
    for key in groups:
        configs[key[:4]] = configs.get(key[:4], 0) + 1
    rows = []
    for (table, dataset, bb_label, method, cid), recs in groups.items():
        metric = recs[0]['metric']
        scale = lambda v: scale_for_table(metric, v)  # noqa: E731
        test_names = list(recs[0]['test'])
        row = OrderedDict(
            table=table, dataset=dataset, metric=metric, backbone=bb_label,
            method=method, method_label=method_label(method)
            + (f' [config {cid}]' if configs[table, dataset, bb_label,
                                               method] > 1 else ''),
            config=cid, seeds=len(recs), seed_list=[r['seed'] for r in recs],
            primary_test=recs[0]['primary_test'])
        row['val_mean'], row['val_std'] = mean_std(
            [scale(r['val']) for r in recs])
        for name in test_names:
            row[f'{name}_mean'], row[f'{name}_std'] = mean_std(
                [scale(r['test'][name]) for r in recs if name in r['test']])
        row['non_finite'] = sum(
            1 for r in recs
            if not all(_finite(v) for v in (r['val'], *r['test'].values())))
        row['test_names'] = test_names
        paper_bb = recs[0].get('paper_backbone') or bb_label
        cell = (paper_number(paper, table, dataset, bb_label,
                             method_label(method))
                if bb_label == paper_bb or table != 6 else None)
        row['paper_mean'], row['paper_std'] = cell if cell else (None, None)
        row['selected_epoch_mean'] = mean_std(
            [r['selected_epoch'] for r in recs])[0]
        row['epochs_run_mean'] = mean_std([r['epochs_run'] for r in recs])[0]
        row['wall_time_s_mean'] = mean_std(
            [r['wall_time_s'] for r in recs])[0]
        row['device'] = recs[0].get('device_name', recs[0].get('device'))
        rows.append(row)
    return rows


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def seeds_text(row: dict) -> str:
    r"""The seed count of a summary row, with its non-finite runs."""
    bad = row.get('non_finite', 0)
    return str(row['seeds']) + (f' ({bad} non-finite)' if bad else '')


def fmt(mean: Optional[float], std: Optional[float], metric: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return '-'
    digits = 3 if metric == 'mcc' else 2
    if std is None or math.isnan(std):
        return f'{mean:.{digits}f}'
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _fmt_time(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return '-'
    if seconds < 120:
        return f'{seconds:.0f} s'
    return f'{seconds / 60:.1f} min'


def summary_markdown(rows: Sequence[dict], paper_available: bool = True
                     ) -> str:
    r"""A markdown table per ``(dataset, backbone)`` of :func:`aggregate`'s
    rows."""
    blocks = []
    by_cell: Dict[tuple, List[dict]] = OrderedDict()
    for row in rows:
        by_cell.setdefault((row['table'], row['dataset'], row['backbone']),
                           []).append(row)
    for (table, dataset, backbone), group in by_cell.items():
        metric = group[0]['metric']
        tests = group[0]['test_names']
        primary = group[0]['primary_test']
        where = f'paper table {table}' if table else 'not in the paper'
        head = (f'**{dataset}**, backbone {backbone}, '
                f'{METRIC_LABELS[metric]} ({where}); mean ± std over seeds, '
                f'test at the best-validation epoch')
        show_paper = paper_available and table is not None
        show_study = any(r.get('study') for r in group)
        cols = ['method', 'seeds', 'val'] + [
            t if len(tests) > 1 else 'test' for t in tests]
        if show_study:
            cols.append('study (n)' + (f' ({primary})' if len(tests) > 1
                                       else ''))
        if show_paper:
            cols.append('paper' + (f' ({primary})' if len(tests) > 1 else ''))
        cols += ['best epoch / epochs', 'time per run']
        lines = [head, '', '| ' + ' | '.join(cols) + ' |',
                 '|' + '---|' * len(cols)]
        for r in group:
            cells = [r['method_label'], seeds_text(r),
                     fmt(r['val_mean'], r['val_std'], metric)]
            cells += [fmt(r[f'{t}_mean'], r[f'{t}_std'], metric)
                      for t in tests]
            if show_study:
                cells.append(r.get('study') or '-')
            if show_paper:
                cells.append(fmt(r['paper_mean'], r['paper_std'], metric))
            cells.append(f"{r['selected_epoch_mean']:.0f} / "
                         f"{r['epochs_run_mean']:.0f}")
            cells.append(_fmt_time(r['wall_time_s_mean']))
            lines.append('| ' + ' | '.join(cells) + ' |')
        blocks.append('\n'.join(lines))
    notes = sorted({r['study_note'] for r in rows if r.get('study_note')})
    if notes:
        blocks.append('study: the reproduction study\'s committed cell for '
                      'this configuration (' + '; '.join(notes) + '), mean ± '
                      'std over its seeds (n): whether these numbers fall in '
                      'the study\'s spread.')
    if not paper_available:
        blocks.append(f'(No paper numbers: {paper_csv_path()} not found; set '
                      f'${PAPER_ENV} to the graph_results.csv file.)')
    return '\n\n'.join(blocks) + '\n'


CSV_FIELDS = ('table', 'dataset', 'metric', 'backbone', 'method',
              'method_label', 'seeds', 'val_mean', 'val_std', 'test',
              'test_mean', 'test_std', 'paper_mean', 'paper_std',
              'selected_epoch_mean', 'epochs_run_mean', 'wall_time_s_mean',
              'device')


def summary_csv(rows: Sequence[dict]) -> str:
    r"""CSV of :func:`aggregate`'s rows: one line per test split."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator='\n')
    writer.writeheader()
    for r in rows:
        for t in r['test_names']:
            line = {k: r.get(k) for k in CSV_FIELDS}
            line['test'] = t
            line['test_mean'], line['test_std'] = r[f'{t}_mean'], \
                r[f'{t}_std']
            if t != r['primary_test']:
                line['paper_mean'] = line['paper_std'] = None
            writer.writerow(line)
    return buf.getvalue()


def study_runs_path() -> Path:
    r"""The study's committed rows: ``$PYG_HMA_RUNS``, or
    ``results/paper/runs.csv`` under the working directory (a checkout's
    root)."""
    env = os.environ.get(RUNS_ENV)
    return Path(env).expanduser() if env else \
        Path('results') / 'paper' / 'runs.csv'


def study_cells(records: Sequence[dict], runs: Sequence[dict]
                ) -> Dict[tuple, Tuple[str, str]]:
    r"""The study's committed cells (``runs.csv`` rows) of the
    configurations of :obj:`records`: ``{summary group: (mean ± std (n),
    note)}``, scored under the records' eval mode. A configuration that
    differs from a study cell's only in its random streams (runs of
    earlier code trained one seed at a time) is matched to it, with a note
    saying so; other configurations have no study cell. A configuration
    trained by several engine versions is shown from the newest one's rows
    (never averaged across versions), and the note names the version. A
    configuration in several of the study's sets (``published``, ``tuned``,
    ...) is shown from the first of them."""
    by_config: Dict[tuple, Dict[int, float]] = {}
    newest: Dict[tuple, int] = {}  # per configuration: its newest engine
    sets: List[str] = []
    for row in runs:
        config, _, scored = row['variant'].partition('/')
        if scored != row['selected_by']:
            continue
        if config not in sets:
            sets.append(config)
        key = (row['config_id'], scored, config)
        engine = int(row['engine'])
        if engine < newest.get(key, engine):
            continue  # an older engine's rows: never mixed with newer ones
        if engine > newest.get(key, engine):
            by_config.pop(key, None)
        newest[key] = engine
        seeds = by_config.setdefault(key, {})
        try:
            seeds[int(row['seed'])] = scale_for_table(row['metric'],
                                                      float(row['test']))
        except ValueError:
            continue
    sets.sort(key=lambda c: (c != 'published', c))  # published first
    out: Dict[tuple, Tuple[str, str]] = {}
    for rec in records:
        key = _group_key(rec)
        if key in out:
            continue
        mode = rec.get('eval_mode', 'order')
        config = dict(rec.get('config') or {})
        batched = bool(config.pop('seed_batched', False))
        other = dict(config) if batched else dict(config, seed_batched=True)
        found = ((cfg, note, sets_of) for cfg, note in (
            (None, 'same configuration'),
            (other, 'trained one seed at a time by earlier code (other '
             'random streams), otherwise the same configuration'
             if batched else 'trained with per-seed random streams, '
             'otherwise the same configuration'))
            for sets_of in sets)
        for cfg, note, study_set in found:
            found_at = (config_id(rec, cfg, RUNS_CONFIG_ID), mode, study_set)
            seeds = by_config.get(found_at)
            if seeds:
                out[key] = (fmt(*mean_std(list(seeds.values())),
                                rec['metric']) + f' ({len(seeds)})',
                            f'{study_runs_path()}, `{study_set}`, engine '
                            f'{newest[found_at]}: {note}')
                break
    return out


def write_summary(folder: os.PathLike, records: Sequence[dict],
                  paper: Optional[List[dict]] = None) -> str:
    r"""Writes ``summary.md`` and ``summary.csv`` into :obj:`folder` and
    returns the markdown. Beside each configuration's mean ± std, the
    summary shows the reproduction study's committed cell for the same
    configuration (:func:`study_cells`, from :func:`study_runs_path` when
    that file exists)."""
    rows = aggregate(records, paper)
    path = study_runs_path()
    try:
        cells = study_cells(records, read_runs(path)) if path.is_file() \
            else {}
    except RunsFileError:
        cells = {}  # an unreadable study file does not stop a run
    for row in rows:
        cell = cells.get((row['table'], row['dataset'], row['backbone'],
                          row['method'], row['config']))
        if cell:
            row['study'], row['study_note'] = cell
    md = summary_markdown(rows, paper_available=paper is not None)
    folder = Path(folder)
    with atomic_path(folder / 'summary.md') as tmp:
        tmp.write_text(md)
    with atomic_path(folder / 'summary.csv') as tmp:
        tmp.write_text(summary_csv(rows))
    return md

