r"""One switch between a linear head and HMA on top of any backbone."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from torch import Tensor, nn

from ..methods import METHODS
from ..nn import HMAClassifier, HMAReadout, ReferenceHMAReadout
from ..nn.stacked import linear
from .backbones import BACKBONES
# Importing the backbone modules registers their names.
from . import gnn, mnist, tu_gin  # noqa: F401


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
        # The head's map is the one the seed-batched trainer runs per seed
        # (pyg_hma.nn.stacked.linear), here as a group of one.
        h = self.encoder(*args, **kwargs)
        return linear(h.unsqueeze(0), self.head.weight.unsqueeze(0),
                      self.head.bias.unsqueeze(0)).squeeze(0)


def build_backbone(name: str, *, num_features: Optional[int] = None,
                   input_shape: Optional[Sequence[int]] = None,
                   **kwargs) -> nn.Module:
    r"""Builds a backbone mapping a batch to pooled embeddings.

    Args:
        name: a name of :data:`~pyg_hma.models.BACKBONES`: ``'gcn'``,
            ``'gin'``, ``'gcn-v'``, ``'gin-v'`` (OGB/CIGA GNNs),
            ``'gin-gmixup'`` (G-Mixup's GIN), ``'mlp'`` (IRM's MLP),
            ``'cnn'``.
        num_features: node feature size (graph backbones).
        input_shape: image shape ``(C, H, W)`` (image backbones).
        **kwargs: passed to the backbone class (e.g. ``hidden_channels``,
            ``num_layers``, ``dropout``, ``pooling``).
    """
    spec = BACKBONES[name]
    clash = set(spec.fixed) & set(kwargs)
    if clash:
        raise ValueError(f"Backbone '{name}' fixes {sorted(clash)}; pick "
                         f"another backbone name instead of overriding them")
    if spec.inputs == 'image':
        if input_shape is None:
            raise ValueError(f"Backbone '{name}' needs input_shape=(C, H, W)")
        return spec.cls(input_shape, **kwargs)
    return spec.cls(num_features, **spec.fixed, **kwargs)


def build_model(backbone: str, method: str = 'erm', *, num_classes: int,
                num_features: Optional[int] = None,
                input_shape: Optional[Sequence[int]] = None,
                out_channels: Optional[int] = None,
                backbone_kwargs: Optional[Dict[str, Any]] = None,
                hma_kwargs: Optional[Dict[str, Any]] = None,
                momentum: Optional[float] = 0.999) -> nn.Module:
    r"""Builds a backbone with the head that :obj:`method` trains.

    Methods with a linear head (:data:`~pyg_hma.methods.METHODS` entries
    without ``hma``) get a :class:`LinearClassifier`; the HMA variants get
    an :class:`~pyg_hma.HMAClassifier` whose readout has the variant's parts
    switched on. Every model is called as ``model(batch, y=None)``, and has
    the backbone as :obj:`model.encoder`.

    Args:
        backbone: see :func:`build_backbone`.
        method: a name of :data:`~pyg_hma.methods.METHODS`.
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
    spec = METHODS[method]
    encoder = build_backbone(backbone, num_features=num_features,
                             input_shape=input_shape,
                             **(backbone_kwargs or {}))
    out = num_classes if out_channels is None else out_channels
    if not spec.uses_hma:
        return LinearClassifier(encoder, out)
    hma_kwargs = dict(hma_kwargs or {})
    clash = set(spec.hma) & set(hma_kwargs)
    if clash:
        raise ValueError(f"hma_kwargs may not set {sorted(clash)}: the method "
                         f"name '{method}' decides them")
    # The released code's readout is a class of its own.
    kind = (ReferenceHMAReadout if hma_kwargs.get('style') == 'reference'
            else HMAReadout)
    readout = kind(encoder.out_channels, num_classes, out_channels=out,
                   **spec.hma, **hma_kwargs)
    return HMAClassifier(encoder, readout, momentum=momentum)
