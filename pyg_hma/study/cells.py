r"""The reproduction report's cells: per-seed scores of a configuration,
their formatting, the paper's number of a cell, and methods against ERM
paired by seed."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

from ..methods import method_label
from ..train.metrics import scale_for_table
from ..train.results import method_rank, paper_number
from .stats import mean_interval, paired_difference


def num(value: float, metric: str, signed: bool = False) -> str:
    r"""A score on the tables' scale: 3 decimals for MCC, 2 for
    percentages; ``-`` when missing or not finite."""
    if value is None or not math.isfinite(value):
        return '-'
    digits = 3 if metric == 'mcc' else 2
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def seeds_cell(seeds: Optional[Dict[int, float]], metric: str) -> str:
    r"""``mean ± std (n)`` of per-seed scores; empty without any."""
    if not seeds:
        return ''
    mean, std, _, n = mean_interval(list(seeds.values()))
    return f'{num(mean, metric)} ± {num(std, metric)} ({n})'


def cells_of(rows: Sequence[dict], variant: str, selected_by: str
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


def paper_cell(paper, table, dataset, backbone, method):
    r"""The paper's ``(mean, std)`` of a cell, or ``None``."""
    if not paper or not table:
        return None
    # Table 6 lists no backbone; every other table names it.
    return paper_number(paper, int(table), dataset, backbone,
                        method_label(method))


PAIRED_HEADER = ['Against ERM, paired by seed (mean difference, 95% '
                 'interval, paired t-test):', '',
                 '| dataset | backbone | difference | ours [95% CI] (pairs) '
                 '| p | paper |', '|---|---|---|---|---|---|']


def paired_lines(cells, table, metric_of, paper) -> List[str]:
    out = paired_rows(cells, table, metric_of, paper)
    return PAIRED_HEADER + out if out else []


def paired_rows(cells, table, metric_of, paper) -> List[str]:
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
            ours_p = paper_cell(paper, table, dataset, backbone, method)
            erm_p = paper_cell(paper, table, dataset, backbone, 'erm')
            paper_d = (num(ours_p[0] - erm_p[0], metric, signed=True)
                       if ours_p and erm_p else '-')
            out.append(
                f'| {dataset} | {backbone} | {method_label(method)} − ERM | '
                f'{num(d["mean"], metric, signed=True)} '
                f'[{num(d["low"], metric, signed=True)}, '
                f'{num(d["high"], metric, signed=True)}] ({d["n"]}) | '
                f'{d["p"]:.3f} | {paper_d} |')
    return out

