r"""OGB molecule benchmarks (paper table 3): ogbg-molbace, ogbg-molbbbp,
ogbg-molhiv with the scaffold split.

    python benchmarks/ogb_mol.py --dataset ogbg-molbace --backbone gcn gin gcn-v gin-v
    python benchmarks/ogb_mol.py --dataset ogbg-molhiv --quick

The protocols, with their sources, are package data:
``pyg_hma/runners/protocols/ogb_mol.py`` (``--help`` prints them).
"""
import sys

from pyg_hma.runners.protocols import ogb_mol as _runner

PROTOCOLS = _runner.PROTOCOLS


def main(argv=None) -> int:
    return _runner.main(argv)


if __name__ == '__main__':
    sys.exit(main())
