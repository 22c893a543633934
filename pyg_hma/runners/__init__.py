r"""The benchmark runners' library.

A runner (``benchmarks/ood.py``, ``ogb_mol.py``, ``tu_id.py``) is a table of
:class:`DatasetProtocol` objects, one per dataset, and a call to
:func:`main`. For every dataset, backbone, seed and method it trains with
:func:`~pyg_hma.train.engine.fit`, writes one JSON file per run and a
summary (markdown and CSV) per dataset and backbone, and prints the summary.

Modules, by job:

* :mod:`.protocol`: :class:`DatasetProtocol`, a dataset's defaults;
* :mod:`.cli`: the command line (:func:`build_parser`, :func:`main`);
* :mod:`.spec`: :class:`RunSpec`, what one invocation asks for, built once
  from the command line, and the checks made before any work;
* :mod:`.plan`: the invocation's cells (dataset, backbone) and jobs
  (method, seed);
* :mod:`.execute`: training the jobs (worker processes, seed groups);
* :mod:`.ray_backend`: the jobs as tasks on a Ray cluster (``--ray``);
* :mod:`.record`: a finished run's JSON record;
* :mod:`.invocation`: :func:`run_benchmark`, the whole invocation;
* :mod:`.outputs`: the output folder (lock, conflicts, logs).

Layout of the output folder (``--out``)::

    OUT/DATASET/BACKBONE/METHOD/seedS.json   # one finished run
    OUT/DATASET/BACKBONE/METHOD/seedS.log    # its per-epoch log
    OUT/DATASET/BACKBONE/METHOD/seedS.ckpt   # while it runs
                                             # (--keep-checkpoints keeps it)
    OUT/DATASET/BACKBONE/summary.md, summary.csv
"""
from .cli import build_parser, main
from .invocation import run_benchmark
from .protocol import DatasetProtocol
from .spec import ArgumentError, RunSpec

__all__ = [
    'DatasetProtocol',
    'RunSpec',
    'ArgumentError',
    'build_parser',
    'main',
    'run_benchmark',
]
