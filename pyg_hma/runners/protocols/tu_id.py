r"""TU in-distribution benchmarks (paper table 4), G-Mixup's protocol.

    python benchmarks/tu_id.py --dataset IMDB-BINARY --method all
    python benchmarks/tu_id.py --dataset IMDB-MULTI --quick

Protocol (G-Mixup, Han et al. 2022, ``src/gmixup.py`` and
``run_vanilla.sh``): a seeded 70/10/20 split per seed; G-Mixup's 5-layer GIN
with 64 dims, mean pooling and a hidden linear layer; Adam 0.01 with weight
decay 5e-4, the learning rate halved every 100 epochs, batch 128, 800
epochs; accuracy; 8 seeds. We report the test accuracy at the
best-validation epoch. Baselines: DropEdge and DropNode (ratio 0.2) and
graph-level Manifold Mixup (Beta(1, 1)); HMA and its ablations use M=256,
k=8, l=16.
"""
import sys

from ...extras import needs_extra
from ...train.engine import TrainConfig
from ..cli import main as run_cli
from ..protocol import DatasetProtocol

GMIXUP = DatasetProtocol(
    train=TrainConfig(epochs=800, batch_size=128, lr=0.01, weight_decay=5e-4,
                      lr_step=100, lr_gamma=0.5),
    method_hyperparameters=dict(drop_ratio=0.2, mixup_alpha=1.0),
    backbone='gin-gmixup', table=4, seeds=8,
    table_methods=('erm', 'dropedge', 'dropnode', 'mmixup', 'rma', 'abd',
                   'abd+syn', 'hma'),
    backbone_kwargs=dict(hidden_channels=64, num_layers=5),
    hma=dict(memory_size=256, slots_per_class=8, label_dim=16, heads=4),
    quick=dict(batch_size=32), note="G-Mixup's vanilla GIN settings")

PROTOCOLS = {name: GMIXUP for name in (
    'IMDB-BINARY', 'IMDB-MULTI', 'REDDIT-BINARY', 'REDDIT-MULTI-5K',
    'REDDIT-MULTI-12K', 'NCI1-ID', 'NCI109-ID', 'PROTEINS-ID', 'DD-ID')}


def main(argv=None) -> int:
    r"""The ``tu_id`` runner's command line (``benchmarks/tu_id.py``,
    ``python -m pyg_hma.runners.protocols.tu_id``); the exit status."""
    with needs_extra('benchmarks'):  # a missing extra: one line, exit 2
        return run_cli(argv, runner='tu_id', protocols=PROTOCOLS,
                       description=__doc__)


if __name__ == '__main__':
    sys.exit(main())
