r"""Backbones of the paper's experiments and the one switch that puts a linear
head or HMA on top of them (:func:`build_model`)."""
from .build import (BACKBONES, HMA_VARIANTS, LINEAR_HEAD_METHODS, METHODS,
                    LinearClassifier, build_backbone, build_model)
from .encoders import AtomEncoder, BondEncoder
from .gnn import GNN, GCNConv, GINConv
from .mnist import IRMMLP, SmallCNN
from .tu_gin import GMixupGIN

__all__ = [
    'build_model',
    'build_backbone',
    'LinearClassifier',
    'BACKBONES',
    'METHODS',
    'LINEAR_HEAD_METHODS',
    'HMA_VARIANTS',
    'GNN',
    'GINConv',
    'GCNConv',
    'GMixupGIN',
    'IRMMLP',
    'SmallCNN',
    'AtomEncoder',
    'BondEncoder',
]
