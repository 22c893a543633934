r"""The reproduction report's cells: per-seed scores of a configuration,
their formatting, the paper's number of a cell, and methods against ERM
paired by seed."""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

from ..methods import method_label
from ..train.metrics import scale_for_table
from ..train.results import method_rank, paper_number
from .stats import (ALPHA, detectable_difference, holm, mean_interval,
                    paired_difference)


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


class CellRun(NamedTuple):
    r"""What a report cell ran: the configuration and the engine version
    that trained its rows. Shown as ``'9d2a1c04e0, engine 3'``."""
    config_id: str
    engine: int

    def __str__(self) -> str:
        return f'{self.config_id}, engine {self.engine}'


def cell_key(row: dict) -> tuple:
    r"""The report cell of a ``runs.csv`` row: ``(table, dataset, backbone,
    method, run)``, where ``run`` is its :class:`CellRun` (configuration and
    engine version): rows of one configuration trained by two engine
    versions are two cells, never averaged together."""
    return (str(row['table']), row['dataset'], row['backbone'],
            row['method'], CellRun(row['config_id'], int(row['engine'])))


def widest(cells: Mapping[tuple, Dict[int, float]],
           group=lambda key: key[:4]) -> Dict[tuple, tuple]:
    r"""Per group of :func:`cell_key` keys (by default a table's dataset,
    backbone and method), the key of the cell with the most seeds, the
    newest engine version among equals: a cell run in several
    configurations or engine versions is shown once, by that one."""
    out: Dict[tuple, tuple] = {}
    for key, seeds in cells.items():
        best = out.get(group(key))
        if best is None or (len(seeds), key[4].engine) > (
                len(cells[best]), best[4].engine):
            out[group(key)] = key
    return out


def cells_of(rows: Sequence[dict], variant: str, selected_by: str
             ) -> Dict[tuple, Dict[int, float]]:
    r"""``{cell_key: {seed: test}}`` (:func:`cell_key`) on the paper's
    scale."""
    out: Dict[tuple, Dict[int, float]] = {}
    for r in rows:
        if r['variant'] != variant or r['selected_by'] != selected_by:
            continue
        out.setdefault(cell_key(r), {})[int(r['seed'])] = scale_for_table(
            r['metric'], float(r['test']))
    return out


def commits_of(rows: Sequence[dict], variant: str, selected_by: str
               ) -> Dict[tuple, set]:
    r"""The commits that trained each cell of :func:`cells_of` (same
    keys)."""
    out: Dict[tuple, set] = {}
    for r in rows:
        if r['variant'] != variant or r['selected_by'] != selected_by:
            continue
        out.setdefault(cell_key(r), set()).add(str(r.get('commit', '')))
    return out


def paper_cell(paper, table, dataset, backbone, method):
    r"""The paper's ``(mean, std)`` of a cell, or ``None``."""
    if not paper or not table:
        return None
    # Table 6 lists no backbone; every other table names it.
    return paper_number(paper, int(table), dataset, backbone,
                        method_label(method))


PAIRED_HEADER = ['Against ERM, paired by seed (mean difference, 95% '
                 'interval, paired t-test; p (Holm) and detectable as stated '
                 'at the top):', '',
                 '| dataset | backbone | difference | ours [95% CI] (pairs) '
                 '| p | p (Holm) | paper | detectable (80% power) |',
                 '|---|---|---|---|---|---|---|---|']


def _newest(commits: set, order: Mapping[str, int]) -> Optional[int]:
    known = [order[c.split('+')[0]] for c in commits
             if c.split('+')[0] in order]
    return max(known) if known else None


def same_code(own: set, erm: Dict[str, set],
              order: Optional[Mapping[str, int]] = None) -> List[str]:
    r"""The ERM configurations (of :obj:`erm`, ``{config_id: commits}``) to
    pair a method's rows (trained by the commits :obj:`own`) with: those that
    share a commit with it; else, with the history's :obj:`order`
    (:func:`~.provenance.commit_order`), those whose newest commit is
    nearest its own (a study run spans commits when the code moves under
    it); else all of them."""
    shared = [e for e, cs in erm.items() if own & cs]
    if shared:
        return sorted(shared)
    mine = _newest(own, order or {})
    if mine is not None:
        gaps = {e: abs(n - mine) for e, cs in erm.items()
                for n in [_newest(cs, order)] if n is not None}
        if gaps:
            return sorted(e for e, g in gaps.items()
                          if g == min(gaps.values()))
    return sorted(erm)


def comparisons(cells: Dict[tuple, Dict[int, float]],
                commits: Optional[Dict[tuple, set]] = None,
                order: Optional[Mapping[str, int]] = None) -> List[dict]:
    r"""Every method against ERM of the same table, dataset and backbone
    in :obj:`cells` (:func:`cells_of`), paired by seed. With
    :obj:`commits` (:func:`commits_of`), a method is paired only with the
    ERM cells of its own engine version and, among them, those trained by
    the same code as its own rows, where there are such (pairs across
    engine versions would mix random streams): one dict per
    comparison with :func:`~.stats.paired_difference`'s numbers, the
    ``table``, ``dataset``, ``backbone``, ``method`` and a ``label``
    (configurations named where a method has several). Comparisons with
    fewer than 2 pairs are left out."""
    groups: Dict[tuple, Dict[tuple, Dict[int, float]]] = {}
    for (table, dataset, backbone, method, cid), seeds in cells.items():
        groups.setdefault((table, dataset, backbone), {})[method, cid] = \
            seeds
    out = []
    for (table, dataset, backbone), runs in sorted(groups.items()):
        erm = sorted(cid for m, cid in runs if m == 'erm')
        configs: Dict[str, int] = {}
        for m, _ in runs:
            configs[m] = configs.get(m, 0) + 1
        for method, cid in sorted(runs, key=lambda k: (method_rank(k[0]),
                                                       k[1])):
            if method == 'erm':
                continue
            # Pairs never cross engine versions where the same one exists.
            paired = [e for e in erm if e.engine == cid.engine] or erm
            if commits:
                paired = same_code(
                    commits.get((table, dataset, backbone, method, cid),
                                set()),
                    {e: commits.get((table, dataset, backbone, 'erm', e),
                                    set()) for e in paired}, order)
            for erm_cid in paired:
                d = paired_difference(runs[method, cid], runs['erm', erm_cid])
                if d is None:
                    continue
                label = method_label(method) + (
                    f' (config {cid})' if configs[method] > 1 else '') + \
                    ' − ERM' + (f' (config {erm_cid})'
                                if len(paired) > 1 else '')
                out.append(dict(d, table=table, dataset=dataset,
                                backbone=backbone, method=method, config=cid,
                                erm_config=erm_cid, label=label))
    return out


def deciding(comps: Sequence[dict], method: str = 'hma'
             ) -> Dict[tuple, dict]:
    r"""Per ``(table, dataset, backbone)``, the comparison of
    :obj:`method` against ERM with the most pairs (the newest engine
    version among equals): the one a summary reports."""
    out: Dict[tuple, dict] = {}
    for c in comps:
        if c['method'] != method:
            continue
        where = (c['table'], c['dataset'], c['backbone'])
        best = out.get(where)
        if best is None or (c['n'], c['config'].engine) > (
                best['n'], best['config'].engine):
            out[where] = c
    return out


def adjust(family: Sequence[dict]) -> None:
    r"""Sets each comparison's ``p_holm`` (Holm over the whole
    :obj:`family`: every paired test of the report) and ``detectable``
    (the smallest difference its pairs detect at 80% power)."""
    for c, p in zip(family, holm([c['p'] for c in family])):
        c['p_holm'] = p
        c['detectable'] = detectable_difference(c['n'], c['sd'])


def significance(c: dict) -> str:
    r"""``better``, ``worse`` or ``no difference``: the sign of a
    comparison whose Holm-adjusted p is below :data:`~.stats.ALPHA`."""
    if c['p_holm'] < ALPHA and c['mean'] > 0:
        return 'better'
    if c['p_holm'] < ALPHA and c['mean'] < 0:
        return 'worse'
    return 'no difference'


def paper_gain(paper, table, dataset, backbone, method) -> Optional[float]:
    r"""The paper's :obj:`method` minus its ERM on one dataset and
    backbone, or ``None`` where the paper lacks either."""
    ours = paper_cell(paper, table, dataset, backbone, method)
    erm = paper_cell(paper, table, dataset, backbone, 'erm')
    return ours[0] - erm[0] if ours and erm else None


def difference_cell(c: dict, metric: str) -> str:
    r"""``mean [low, high] (pairs)`` of a comparison."""
    return (f'{num(c["mean"], metric, signed=True)} '
            f'[{num(c["low"], metric, signed=True)}, '
            f'{num(c["high"], metric, signed=True)}] ({c["n"]})')


def p_cell(p: float) -> str:
    r"""A p-value to three decimals; below 0.001 as ``<0.001`` (never
    ``0.000``)."""
    return '<0.001' if p < 0.0005 else f'{p:.3f}'


def paired_rows(comps: Sequence[dict], metric_of, paper) -> List[str]:
    r"""One markdown row per comparison (:func:`comparisons`, adjusted by
    :func:`adjust`)."""
    out = []
    for c in comps:
        table, dataset, backbone = c['table'], c['dataset'], c['backbone']
        metric = metric_of[(table, dataset)]
        gain = paper_gain(paper, table, dataset, backbone, c['method'])
        out.append(
            f'| {dataset} | {backbone} | {c["label"]} | '
            f'{difference_cell(c, metric)} | '
            f'{p_cell(c["p"])} | {p_cell(c["p_holm"])} | '
            f'{num(gain, metric, signed=True)} | '
            f'{num(c["detectable"], metric)} |')
    return out


HMA_HEADER = ['| table | dataset | backbone | ERM (n) | HMA (n) | '
              'HMA − ERM [95% CI] (pairs) | p (Holm) | detectable (80% '
              'power) | paper\'s HMA − ERM | paper\'s in our CI | HMA is |',
              '|---|---|---|---|---|---|---|---|---|---|---|']


def hma_against_erm(cells: Mapping[tuple, Dict[int, float]],
                    comps: Sequence[dict], metric_of, paper) -> List[str]:
    r"""HMA against ERM, one row per paper table, dataset and backbone:
    the comparison with the most pairs (:func:`deciding`), the two cells
    it pairs (:obj:`cells`, :func:`cells_of`), the paper's difference and
    whether our 95% interval holds it, and the verdict by the
    Holm-adjusted p (:func:`significance`). Header
    :data:`HMA_HEADER`; no lines without any comparison."""
    out = []
    for (table, dataset, backbone), c in sorted(deciding(comps).items()):
        if not table:
            continue
        metric = metric_of[(table, dataset)]
        gain = paper_gain(paper, table, dataset, backbone, 'hma')
        erm = cells[table, dataset, backbone, 'erm', c['erm_config']]
        hma = cells[table, dataset, backbone, 'hma', c['config']]
        out.append(
            f'| {table} | {dataset} | {backbone} | '
            f'{seeds_cell(erm, metric)} | {seeds_cell(hma, metric)} | '
            f'{difference_cell(c, metric)} | {p_cell(c["p_holm"])} | '
            f'{num(c["detectable"], metric)} | '
            f'{num(gain, metric, signed=True)} | '
            + ('-' if gain is None else
               'yes' if c['low'] <= gain <= c['high'] else 'no')
            + f' | {significance(c)} |')
    return HMA_HEADER + out if out else []


def paired_lines(comps: Sequence[dict], metric_of, paper) -> List[str]:
    r"""The paired table of :obj:`comps` with its header (none without
    any)."""
    out = paired_rows(comps, metric_of, paper)
    return PAIRED_HEADER + out if out else []
