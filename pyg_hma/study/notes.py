r"""What the reproduction report says beside its numbers: the known
differences from the paper's setting, and why the study has not run some
of the paper's cells (with their measured cost)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ..methods import METHODS, method_label
from ..train.results import ENGINE_VERSION, ENGINE_VERSIONS

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

#: Per engine version (:data:`~pyg_hma.train.results.ENGINE_VERSIONS`), how
#: today's code reproduces its committed rows (the current version: to the
#: bit).
ENGINE_NOTES = {
    1: ("rows trained one run at a time (`--seed-batch 1`) took torch's "
        'global random stream: their commit reproduces them (the command '
        'says so); today every run trains with its seed\'s own streams, so '
        'these rows reproduce in distribution only, as do the seed-batched '
        'groups of this engine'),
    2: ('groups of one and most groups reproduce to the bit; a seed whose '
        "batches held about 160-376 nodes (Graph-SST5's batches, the last "
        'batches of Graph-Twitter and NCI109, DropNode\'s thinned batches), '
        'a one-column (BCE) head or the CNN rounded differently in its group '
        'than alone: such rows reproduce in distribution only'),
}


def engine_lines() -> List[str]:
    r"""The report's table of engine versions: each one's first commit,
    what changed, and how today's code reproduces its rows."""
    lines = ['| engine | from | what changed | its rows today |',
             '|---|---|---|---|']
    for version, first, what in ENGINE_VERSIONS:
        today = ENGINE_NOTES.get(version) if version != ENGINE_VERSION \
            else 'today\'s engine: its cells\' commands reproduce them to ' \
            'the bit'
        lines.append(f"| {version} | {f'`{first[:7]}`' if first else '-'} | "
                     f'{what} | {today} |')
    return lines


#: Why the study has not run a table's cells on this machine, with their
#: measured cost: per dataset, ``None`` for the table's other datasets.
NOT_RUN_NOTES = {
    3: {None: (
        'not run yet. On the CPU (one thread, beside one other training '
        'process) ogbg-molbace GCN ERM took about 8 minutes per 100 epochs '
        'for a group of 3 seeds (3.7-5.5 s per seed and epoch) and its HMA '
        '12-15; a seed of ogbg-molbbbp GCN ERM takes 3.8 s per epoch alone '
        'against 5-5.7 s per seed in a group of 4, so the molecules now '
        'train one seed at a time by default (docs/performance.md). A GIN '
        'ERM step of 32 molecules takes 194 ms, 1.60x its sgemm floor (121 '
        'ms; drawing the dropout masks is a tenth of the step), HMA 1.50x '
        'ERM (`benchmarks/speed.py --dataset ogbg-molbace --backbone GIN`). '
        'molbace and molbbbp x GCN, GIN x ERM, HMA x 10 seeds is about 19 '
        'CPU-hours in background lanes (one seed at a time, two processes, '
        '`benchmarks/ogb_mol.py --seeds 10 --resume`): a 100-epoch seed '
        'takes 6-8 minutes for GCN ERM, 11-12 for GCN HMA, 15 for GIN ERM '
        'and 22-23 for GIN HMA; GCN-v and GIN-v would take about as long '
        'again (`--backbone gcn-v gin-v`). molhiv (about 27x '
        'molbace per epoch) needs a GPU: `benchmarks/table3_gpu.py` '
        '(rehearsed on CPU) runs cells seed-batched on a lent GPU within a '
        'time budget and resumes across calls; molhiv 57-141 min per cell, '
        'out of reach of 15-minute loans')},
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


def not_run_by_reason(table: str, missing: Sequence[tuple]
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


def paper_cells_not_run(paper, table: str, ran) -> List[tuple]:
    """The paper's (dataset, backbone, method label) cells of ``table`` for
    methods this project implements, without a run (a blank paper backbone
    matches any)."""
    done = {(d, method_label(m)) for d, _, m in ran}
    done_bb = {(d, b, method_label(m)) for d, b, m in ran}
    return sorted({(r['dataset'], r['backbone'], r['method'])
                   for r in (paper or []) if str(r['table']) == table
                   and r['method'] in {s.label for s in METHODS.values()}}
                  - done_bb - {(d, '', m) for d, m in done})

