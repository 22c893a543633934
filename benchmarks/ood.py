r"""Out-of-distribution benchmarks: TU size shift (paper table 6), Graph-SST5
and Graph-Twitter degree shift (table 5) and Colored MNIST.

    python benchmarks/ood.py --dataset NCI1            # ERM and HMA, 10 seeds
    python benchmarks/ood.py --dataset PROTEINS --method all
    python benchmarks/ood.py --dataset NCI1 --quick    # tiny smoke run

The protocols, with their sources, are package data:
``pyg_hma/runners/protocols/ood.py`` (``--help`` prints them).
"""
import sys

from pyg_hma.runners.protocols import ood as _runner

PROTOCOLS = _runner.PROTOCOLS


def main(argv=None) -> int:
    return _runner.main(argv)


if __name__ == '__main__':
    sys.exit(main())
