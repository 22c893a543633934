r"""OGB molecule benchmarks (paper table 3): ogbg-molbace, ogbg-molbbbp,
ogbg-molhiv with the scaffold split.

    python benchmarks/ogb_mol.py --dataset ogbg-molbace --backbone gcn gin gcn-v gin-v
    python benchmarks/ogb_mol.py --dataset ogbg-molhiv --quick

Protocol (OGB's ``examples/graphproppred/mol``): GCN / GIN with OGB's atom
and bond encoders, optionally a virtual node (GCN-v, GIN-v), 5 layers, 300
dims, dropout 0.5, mean pooling; Adam 1e-3, batch 32, 100 epochs, BCE on the
labelled targets, ROC-AUC by ogb's Evaluator, test at the best-validation
epoch, 10 seeds. HMA: M=256, k=8, l=16, 4 heads, momentum 0.999.
"""
import sys

from ...extras import asks_for_help, needs_extra, require
from ...train.engine import TrainConfig
from ..cli import main as run_cli
from ..protocol import DatasetProtocol

OGB = DatasetProtocol(
    train=TrainConfig(epochs=100, batch_size=32, lr=1e-3, loss='bce'),
    backbone='gin', table=3, seeds=10,
    backbone_kwargs=dict(hidden_channels=300, num_layers=5, dropout=0.5,
                         pooling='mean', atom_encoder=True, bond_encoder=True),
    hma=dict(memory_size=256, slots_per_class=8, label_dim=16, heads=4),
    # --quick: a narrower GNN on 128 molecules keeps the smoke run short.
    quick=dict(epochs=2, train_size=128, eval_size=64,
               backbone_kwargs=dict(hidden_channels=64)),
    note="OGB's mol example (main_pyg.py) defaults")

PROTOCOLS = {name: OGB for name in
             ('ogbg-molbace', 'ogbg-molbbbp', 'ogbg-molhiv')}


def main(argv=None) -> int:
    r"""The ``ogb_mol`` runner's command line (``benchmarks/ogb_mol.py``,
    ``python -m pyg_hma.runners.protocols.ogb_mol``); the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not asks_for_help(args) and not any(
            a.startswith('--exported') for a in args):
        # OGB's loader reads the molecules: without the extra, one line
        # before any work (--exported splits train with torch and PyG).
        require('benchmarks', modules=('ogb', 'rdkit', 'pandas'))
    with needs_extra('benchmarks'):  # a missing extra: one line, exit 2
        return run_cli(argv, runner='ogb_mol', protocols=PROTOCOLS,
                       description=__doc__)


if __name__ == '__main__':
    sys.exit(main())
