r"""The reproduction study, above the runners: committed rows, the report,
sweeps, summaries and figures.

Layers: :mod:`pyg_hma.study` imports the runners (:mod:`pyg_hma.runners`),
which import the training engine and the result records
(:mod:`pyg_hma.train`), never the reverse.

Modules, by job:

* :mod:`.rows`: finished runs -> ``results/paper/runs.csv`` (``collect``);
* :mod:`.stats`: intervals, verdicts, paired tests;
* :mod:`.report`: ``docs/reproduction.md`` from the committed rows, with
  :mod:`.cells`, :mod:`.sections`, :mod:`.notes` and :mod:`.figures`;
* :mod:`.tuning`: committed sweep summaries and the report's tuned
  section;
* :mod:`.sweep` and :mod:`.sweep_space`: hyperparameter sweeps
  (``benchmarks/sweep.py``);
* :mod:`.tables`: one table per paper table from result files
  (``benchmarks/report.py``).

The result records themselves (per-seed JSON, ``runs.csv`` reading,
summaries) are :mod:`pyg_hma.train.results`, below the runners.
"""
