r"""One switch between a linear head and HMA on top of any backbone."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from torch import Tensor, nn

from ..nn import HMAClassifier, HMAReadout
from .gnn import GNN
from .mnist import IRMMLP, SmallCNN
from .tu_gin import GMixupGIN

# name -> (class, fixed keyword arguments). GNN backbones read node features
# of size `num_features`; image backbones read `input_shape`.
BACKBONES: Dict[str, tuple] = {
    'gcn': (GNN, dict(conv='gcn')),
    'gin': (GNN, dict(conv='gin')),
    'gcn-v': (GNN, dict(conv='gcn', virtual_node=True)),
    'gin-v': (GNN, dict(conv='gin', virtual_node=True)),
    'gin-gmixup': (GMixupGIN, {}),
    'mlp': (IRMMLP, {}),
    'cnn': (SmallCNN, {}),
}
_IMAGE_BACKBONES = ('mlp', 'cnn')

# The paper's ablations: which parts of the HMA readout each one keeps.
HMA_VARIANTS: Dict[str, Dict[str, bool]] = {
    'rma': dict(rma=True, abd=False, synthetic=False),
    'abd': dict(rma=False, abd=True, synthetic=False),
    'abd+syn': dict(rma=False, abd=True, synthetic=True),
    'abd+rma': dict(rma=True, abd=True, synthetic=False),
    'hma': dict(rma=True, abd=True, synthetic=True),
}
# Methods that train the backbone with a plain linear head; they differ only
# in the objective (see :mod:`pyg_hma.train.methods`).
LINEAR_HEAD_METHODS = ('erm', 'irm', 'vrex', 'dropedge', 'dropnode', 'mmixup')
METHODS = LINEAR_HEAD_METHODS + tuple(HMA_VARIANTS)


class LinearClassifier(nn.Module):
    r"""A backbone followed by a linear layer: the ERM model.

    Args:
        encoder (torch.nn.Module): maps a batch to embeddings :math:`(B, d)`
            and exposes :obj:`out_channels = d`.
        out_channels (int): number of logits.
    """
    def __init__(self, encoder: nn.Module, out_channels: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_channels, out_channels)

    def reset_parameters(self):
        self.encoder.reset_parameters()
        self.head.reset_parameters()

    def forward(self, *args, y: Optional[Tensor] = None, **kwargs) -> Tensor:
        # `y` is accepted (and ignored) so that every model is called alike.
        return self.head(self.encoder(*args, **kwargs))


def build_backbone(name: str, *, num_features: Optional[int] = None,
                   input_shape: Optional[Sequence[int]] = None,
                   **kwargs) -> nn.Module:
    r"""Builds a backbone mapping a batch to pooled embeddings.

    Args:
        name: one of :obj:`BACKBONES`: ``'gcn'``, ``'gin'``, ``'gcn-v'``,
            ``'gin-v'`` (OGB/CIGA GNNs), ``'gin-gmixup'`` (G-Mixup's GIN),
            ``'mlp'`` (IRM's MLP), ``'cnn'``.
        num_features: node feature size (graph backbones).
        input_shape: image shape ``(C, H, W)`` (image backbones).
        **kwargs: passed to the backbone class (e.g. ``hidden_channels``,
            ``num_layers``, ``dropout``, ``pooling``).
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone '{name}'; choose one of "
                         f"{', '.join(BACKBONES)}")
    cls, fixed = BACKBONES[name]
    clash = set(fixed) & set(kwargs)
    if clash:
        raise ValueError(f"Backbone '{name}' fixes {sorted(clash)}; pick "
                         f"another backbone name instead of overriding them")
    if name in _IMAGE_BACKBONES:
        if input_shape is None:
            raise ValueError(f"Backbone '{name}' needs input_shape=(C, H, W)")
        return cls(input_shape, **kwargs)
    return cls(num_features, **fixed, **kwargs)


def build_model(backbone: str, method: str = 'erm', *, num_classes: int,
                num_features: Optional[int] = None,
                input_shape: Optional[Sequence[int]] = None,
                out_channels: Optional[int] = None,
                backbone_kwargs: Optional[Dict[str, Any]] = None,
                hma_kwargs: Optional[Dict[str, Any]] = None,
                momentum: Optional[float] = 0.999) -> nn.Module:
    r"""Builds a backbone with the head that :obj:`method` trains.

    Linear-head methods (:obj:`LINEAR_HEAD_METHODS`) get a
    :class:`LinearClassifier`; the HMA variants (:obj:`HMA_VARIANTS`) get an
    :class:`~pyg_hma.HMAClassifier` whose readout has the variant's parts
    switched on. Every model is called as ``model(batch, y=None)``, and has
    the backbone as :obj:`model.encoder`.

    Args:
        backbone: see :func:`build_backbone`.
        method: a name in :obj:`METHODS`.
        num_classes: number of classes (2 for binary tasks).
        num_features: node feature size (graph backbones).
        input_shape: image shape (image backbones).
        out_channels: number of logits; defaults to :obj:`num_classes`
            (use 1 for a binary BCE head).
        backbone_kwargs: keyword arguments of the backbone.
        hma_kwargs: keyword arguments of :class:`~pyg_hma.HMAReadout`
            (``memory_size``, ``slots_per_class``, ``label_dim``, ``heads``,
            ...); not allowed to set the variant's switches.
        momentum: EMA momentum of HMA's key encoder (``None``: no key
            encoder; the queue receives the online embeddings).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method '{method}'; choose one of "
                         f"{', '.join(METHODS)}")
    encoder = build_backbone(backbone, num_features=num_features,
                             input_shape=input_shape,
                             **(backbone_kwargs or {}))
    out = num_classes if out_channels is None else out_channels
    if method in LINEAR_HEAD_METHODS:
        return LinearClassifier(encoder, out)
    hma_kwargs = dict(hma_kwargs or {})
    clash = set(HMA_VARIANTS[method]) & set(hma_kwargs)
    if clash:
        raise ValueError(f"hma_kwargs may not set {sorted(clash)}: the method "
                         f"name '{method}' decides them")
    readout = HMAReadout(encoder.out_channels, num_classes, out_channels=out,
                         **HMA_VARIANTS[method], **hma_kwargs)
    return HMAClassifier(encoder, readout, momentum=momentum)
