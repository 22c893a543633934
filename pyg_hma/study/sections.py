r"""The reproduction report's sections beside the paper's tables: the eval
modes compared (does the eval batch matter?) and the released code's
module (faithfulness)."""
from __future__ import annotations

from typing import Dict, List

from ..methods import method_label
from ..train.engine import EVAL_MODES
from ..train.metrics import scale_for_table
from ..train.results import method_rank
from .cells import seeds_cell
from .rows import DEFAULT_EVAL


def eval_section(rows, config, metric_of) -> List[str]:
    r"""The eval modes compared on runs trained with ``--compare-evals``
    (none without such runs)."""
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
            same = seeds_cell(by[DEFAULT_EVAL, DEFAULT_EVAL], metric)
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
                cells.append(seeds_cell(seeds, metric))
            out.append(f'| {dataset} | {method_label(method)} | {label} | '
                       + ' | '.join(cells) + ' |')
    return out + ['']


def reference_section(rows, config, metric_of) -> List[str]:
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
            row.append(seeds_cell(cells[key].get(v), metric))
        out.append(f'| {key[1]} | {method_label(key[2])} | '
                   + ' | '.join(row) + ' |')
    return out + ['']

