r"""The reproduction report's figures (matplotlib, PNG): one per paper
table, the validation/test curves and one heatmap per swept dataset.

:func:`write_figures` prepares the numbers from the committed rows and
calls the plotting functions. Every figure is written atomically;
matplotlib is imported on first use with the non-interactive ``Agg``
backend.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from ..files import atomic_path
from ..methods import method_label
from ..train.metrics import METRIC_LABELS, scale_for_table
from ..train.results import method_rank
from .cells import cell_key, cells_of, paper_cell, widest
from .rows import CURVE_CELLS, DEFAULT_EVAL, drawn, run_of
from .stats import mean_interval
from .tables import TABLE_TITLES
from .tuning import sweep_grid

#: ``{method label: {seed: [(epoch, value), ...]}}``
SeedCurves = Mapping[str, Mapping[int, Sequence[Tuple[int, float]]]]


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
    _pyplot().close(fig)


def table_figure(path: Path, title: str, ylabel: str, labels: Sequence[str],
                 ours: Sequence[float], ours_err: Sequence[float],
                 paper: Sequence[float], paper_err: Sequence[float]) -> None:
    r"""Ours (mean, 95% interval) beside the paper's mean ± std, one column
    per cell."""
    plt = _pyplot()
    # A column as wide as its longest label line (7-point ticks) needs.
    longest = max((len(line) for label in labels
                   for line in label.split('\n')), default=0)
    per_label = max(0.7, 0.085 * longest)
    fig, ax = plt.subplots(figsize=(max(6, per_label * len(labels)), 3.6))
    xs = range(len(labels))
    ax.errorbar([x - 0.12 for x in xs], ours, yerr=ours_err, fmt='o',
                label='ours (mean, 95% CI over seeds)')
    ax.errorbar([x + 0.12 for x in xs], paper, yerr=paper_err, fmt='s',
                label='paper (mean ± std)')
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _mean_curve(seeds: Mapping[int, Sequence[Tuple[int, float]]],
                min_seeds: int) -> Tuple[List[int], List[float]]:
    by_epoch: Dict[int, List[float]] = {}
    for points in seeds.values():
        for epoch, value in points:
            if math.isfinite(value):
                by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(e for e, v in by_epoch.items() if len(v) >= min_seeds)
    return epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]


def curves_figure(path: Path,
                  panels: Sequence[Tuple[str, str, SeedCurves]]) -> None:
    r"""One panel per ``(title, ylabel, curves)``: each method's per-seed
    curves (thin) and their mean over the seeds still running at an epoch
    (thick; drawn while at least half of the seeds run)."""
    plt = _pyplot()
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9, 3.1 * rows),
                             squeeze=False)
    for ax, (title, ylabel, curves) in zip(axes.flat, panels):
        for i, (method, seeds) in enumerate(sorted(curves.items())):
            color = f'C{i}'
            for points in seeds.values():
                ax.plot([e for e, _ in points], [v for _, v in points],
                        color=color, alpha=0.15, linewidth=0.8)
            epochs, mean = _mean_curve(seeds, max(1, len(seeds) // 2))
            ax.plot(epochs, mean, color=color, linewidth=2,
                    label=f'{method} (mean of {len(seeds)} seeds)')
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('epoch')
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, path)


def heatmap_figure(path: Path, grids: Sequence[dict]) -> None:
    r"""One heatmap per grid, side by side. A grid is a dict with ``title``,
    ``x_label``, ``x_values``, ``y_label``, ``y_values``, ``scores`` (rows
    follow ``y_values``; ``None`` where a trial did not finish) and
    ``best`` (``(row, column)`` or ``None``)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(4.6 * len(grids), 3.6),
                             squeeze=False)
    for ax, grid in zip(axes.flat, grids):
        scores = [[math.nan if v is None else v for v in row]
                  for row in grid['scores']]
        image = ax.imshow(scores, cmap='viridis', aspect='auto')
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_xticks(range(len(grid['x_values'])))
        ax.set_xticklabels([str(v) for v in grid['x_values']], fontsize=8)
        ax.set_yticks(range(len(grid['y_values'])))
        ax.set_yticklabels([str(v) for v in grid['y_values']], fontsize=8)
        ax.set_xlabel(grid['x_label'])
        ax.set_ylabel(grid['y_label'])
        ax.set_title(grid['title'], fontsize=9)
        for r, row in enumerate(scores):
            for c, value in enumerate(row):
                if math.isfinite(value):
                    bold = grid.get('best') == (r, c)
                    ax.text(c, r, f'{value:.3g}', ha='center', va='center',
                            fontsize=7, color='white',
                            fontweight='bold' if bold else 'normal')
    fig.tight_layout()
    _save(fig, path)


def curve_panels(rows, curves, config) -> list:
    r"""The curves figure's panels: per drawn cell and split, each
    method's per-seed curves from ``curves.csv``. A method run in several
    configurations or engine versions shows the runs of one, the one with
    the most seeds (:func:`~.cells.widest`), and names its engine."""
    variant = f'{config}/{DEFAULT_EVAL}'
    shown = [r for r in rows
             if r['variant'] == variant and r['selected_by'] == DEFAULT_EVAL
             and drawn(str(r['table']), r['dataset'], r['method'])]
    chosen = set(widest(cells_of(shown, variant, DEFAULT_EVAL),
                        group=lambda key: (key[0], key[1], key[3])).values())
    runs = {run_of(r): r for r in shown if cell_key(r) in chosen}
    series: Dict[tuple, dict] = {}
    for c in curves:
        run = runs.get(run_of(c))
        if run is None:
            continue
        for split in ('val', 'test'):
            if c[split] == '':
                continue
            value = scale_for_table(run['metric'], float(c[split]))
            series.setdefault((run['table'], run['dataset'], run['metric'],
                               split), {}).setdefault(
                f"{method_label(run['method'])}, engine {run['engine']}",
                {}).setdefault(
                int(run['seed']), []).append((int(c['epoch']), value))
    panels = []
    for (table, dataset, metric, split), by_method in sorted(
            series.items(), key=lambda kv: (
                CURVE_CELLS.index((str(kv[0][0]), kv[0][1])),
                kv[0][3] != 'val')):
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
    main = cells_of(rows, f'{config}/{DEFAULT_EVAL}', DEFAULT_EVAL)
    out = {}

    def done(key, path):
        out[key] = os.path.relpath(path, relative_to)

    for table in sorted({k[0] for k in main if k[0]}):
        keys = sorted((k for k in main if k[0] == table),
                      key=lambda k: (k[1], method_rank(k[3])))
        labels, ours, ours_err, theirs, theirs_err = [], [], [], [], []
        for key in keys:
            mean, _, half, _ = mean_interval(list(main[key].values()))
            cell = paper_cell(paper, table, key[1], key[2], key[3])
            labels.append(f'{key[1]}\n{method_label(key[3])}')
            ours.append(mean)
            ours_err.append(0 if not math.isfinite(half) else half)
            theirs.append(cell[0] if cell else math.nan)
            theirs_err.append(cell[1] if cell else 0)
        metric = next(r['metric'] for r in rows if str(r['table']) == table)
        path = folder / f'table{table}.png'
        table_figure(path, TABLE_TITLES.get(int(table), f'Table {table}'),
                     METRIC_LABELS.get(metric, metric), labels, ours,
                     ours_err, theirs, theirs_err)
        done(table, path)
    panels = curve_panels(rows, curves, config)
    if panels:
        path = folder / 'curves.png'
        curves_figure(path, panels)
        done('curves', path)
    for dataset in sorted({sw['dataset'] for sw in sweeps}):
        grids = [g for g in (sweep_grid(sw) for sw in sweeps
                             if sw['dataset'] == dataset) if g]
        if grids:
            path = folder / f'sweep_{dataset}.png'
            heatmap_figure(path, grids)
            done(f'sweep:{dataset}', path)
    return out

