r"""TU in-distribution benchmarks (paper table 4), G-Mixup's protocol.

    python benchmarks/tu_id.py --dataset IMDB-BINARY --method all
    python benchmarks/tu_id.py --dataset IMDB-MULTI --quick

The protocols, with their sources, are package data:
``pyg_hma/runners/protocols/tu_id.py`` (``--help`` prints them).
"""
import sys

from pyg_hma.runners.protocols import tu_id as _runner

PROTOCOLS = _runner.PROTOCOLS


def main(argv=None) -> int:
    return _runner.main(argv)


if __name__ == '__main__':
    sys.exit(main())
