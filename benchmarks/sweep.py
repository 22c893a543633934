r"""Hyperparameter sweeps, chosen on validation only, then confirmed on fresh
seeds (issue 10: tune as the paper did, with the same budget for ERM).

    python benchmarks/sweep.py --runner ood --dataset NCI1 --method hma
    python benchmarks/sweep.py --runner ood --dataset NCI1 --method erm
    python benchmarks/sweep.py --runner ood --dataset PROTEINS --method hma \
        --param hma.memory_size=1x,2x --param train.lr=1e-3,1e-4 -- --epochs 50
    python benchmarks/sweep.py --runner ood --dataset PROTEINS --method hma \
        --quick

HMA's default space is the paper's M x k grid (12 trials), every other
method's dropout x learning rate (12 trials: the same budget). Every trial
is scored by its mean validation score over the search seeds
(default 100-102); the best is written to OUT/best.json and confirmed on
seeds 0-9 (OUT/confirm). Run the same command again to continue a stopped
sweep. Options after `--` go to the runner. The logic lives in
pyg_hma/study/sweep.py (`python benchmarks/sweep.py -h` for all options).
"""
import sys

from pyg_hma.study.sweep import main

if __name__ == '__main__':
    sys.exit(main())
