r"""Backbones of the paper's experiments and the one switch that puts a linear
head or HMA on top of them (:func:`build_model`)."""
from .backbones import BACKBONES, BackboneSpec, backbone_label
from .build import LinearClassifier, build_backbone, build_model
from .encoders import AtomEncoder, BondEncoder
from .gnn import GNN, GCNConv, GINConv
from .mnist import IRMMLP, SmallCNN
from .tu_gin import GMixupGIN
from .union import StackedEncoder, UnionBatch

__all__ = [
    'build_model',
    'build_backbone',
    'LinearClassifier',
    'BACKBONES',
    'BackboneSpec',
    'backbone_label',
    'StackedEncoder',
    'UnionBatch',
    'GNN',
    'GINConv',
    'GCNConv',
    'GMixupGIN',
    'IRMMLP',
    'SmallCNN',
    'AtomEncoder',
    'BondEncoder',
]
