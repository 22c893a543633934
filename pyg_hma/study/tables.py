r"""One markdown table per paper table from result files
(``benchmarks/report.py``): rows are (backbone, method), columns each
dataset's mean ± std over seeds beside the paper's number."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

from ..train.results import aggregate, fmt, paper_csv_path, seeds_text

TABLE_TITLES = {
    3: 'Table 3: OGB molecules, scaffold split (ROC-AUC x100)',
    4: 'Table 4: TU in distribution, G-Mixup protocol (accuracy %)',
    5: 'Table 5: Graph-SST5 / Graph-Twitter, degree shift (accuracy %)',
    6: 'Table 6: TU size shift (Matthews correlation)',
}


def report_markdown(records: Sequence[dict],
                    paper: Optional[List[dict]] = None) -> str:
    r"""One markdown table per paper table: rows are (backbone, method),
    columns each dataset's score and the paper's."""
    rows = aggregate(records, paper)
    by_table: Dict[Any, List[dict]] = OrderedDict()
    for row in sorted(rows, key=lambda r: (r['table'] is None,
                                           r['table'] or 0)):
        by_table.setdefault(row['table'], []).append(row)
    blocks = []
    for table, group in by_table.items():
        title = TABLE_TITLES.get(table, 'Not in the paper')
        datasets = list(OrderedDict.fromkeys(r['dataset'] for r in group))
        # One row per (backbone, method) and configuration.
        keys = list(OrderedDict.fromkeys((r['backbone'], r['method_label'])
                                         for r in group))
        has_paper = paper is not None and table is not None
        primary = {r['dataset']: r['primary_test'] for r in group}
        cols = ['backbone', 'method']
        for d in datasets:
            split = '' if primary[d] == 'test' else f' {primary[d]}'
            cols.append(f'{d}{split} (seeds)')
            if has_paper:
                cols.append(f'{d} paper')
        lines = [f'### {title}', '', '| ' + ' | '.join(cols) + ' |',
                 '|' + '---|' * len(cols)]
        index = {(r['backbone'], r['method_label'], r['dataset']): r
                 for r in group}
        for backbone, label in keys:
            cells = [backbone, label]
            for d in datasets:
                r = index.get((backbone, label, d))
                if r is None:
                    cells += [''] * (2 if has_paper else 1)
                    continue
                t = r['primary_test']
                score = fmt(r[f'{t}_mean'], r[f'{t}_std'], r['metric'])
                cells.append(f"{score} ({seeds_text(r)})")
                if has_paper:
                    cells.append(fmt(r['paper_mean'], r['paper_std'],
                                     r['metric']))
            lines.append('| ' + ' | '.join(cells) + ' |')
        blocks.append('\n'.join(lines))
    if paper is None:
        blocks.append(f'(No paper numbers: {paper_csv_path()} not found.)')
    return '\n\n'.join(blocks) + '\n'
