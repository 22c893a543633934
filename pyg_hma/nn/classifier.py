"""Backbone + momentum copy + HMA readout in one module."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .hma_readout import HMAReadout
from .momentum import MomentumEncoder


class HMAClassifier(nn.Module):
    r"""The full HMA method around any encoder that maps a batch to pooled
    embeddings :math:`(B, d)`: the encoder, its momentum copy that writes the
    queue, and an :class:`HMAReadout`.

    .. code-block:: python

        encoder = MyGNN(...)                    # batch -> [B, 64]
        model = HMAClassifier(encoder, HMAReadout(64, num_classes=2))
        logits = model(data.x, data.edge_index, data.batch, y=data.y)

    In training mode with labels, each call (1) takes one EMA step of the
    momentum copy, (2) encodes the batch with it and (3) writes those keys
    with their labels into the queue. Without labels, or in eval mode, it
    only predicts; the labels never enter the prediction itself. When the
    readout has no real memory (:obj:`rma=False`) the momentum copy is
    skipped.

    With :obj:`momentum=None` there is no key encoder: the queue receives
    the online encoder's own (detached) embeddings of the batch. This is
    **not** the paper's MoCo-style memory (keys then drift with the online
    weights), but it saves the key encoder's forward pass, which is a third
    to a half of a training step (see ``docs/performance.md``).

    Args:
        encoder (torch.nn.Module): maps its inputs to embeddings
            :math:`(B, d)`.
        readout (HMAReadout): the readout, with :obj:`in_channels = d`.
        momentum (float, optional): EMA momentum of the key encoder;
            :obj:`None` writes the online embeddings instead.
            (default: :obj:`0.999`)
    """
    def __init__(self, encoder: nn.Module, readout: HMAReadout,
                 momentum: Optional[float] = 0.999):
        super().__init__()
        self.encoder = encoder
        self.readout = readout
        self.momentum_encoder = (MomentumEncoder(encoder, momentum)
                                 if readout.rma and momentum is not None
                                 else None)

    def reset_parameters(self):
        if hasattr(self.encoder, 'reset_parameters'):
            self.encoder.reset_parameters()
        self.readout.reset_parameters()
        if self.momentum_encoder is not None:
            self.momentum_encoder.copy_from(self.encoder)

    def reset_memory(self):
        self.readout.reset_memory()

    def forward(self, *args, y: Tensor = None, **kwargs) -> Tensor:
        h = self.encoder(*args, **kwargs)
        key = None
        if self.training and y is not None and self.momentum_encoder is not None:
            self.momentum_encoder.update(self.encoder)
            key = self.momentum_encoder(*args, **kwargs)
        return self.readout(h, y=y, key=key)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.encoder.__class__.__name__}'
                f', {self.readout})')
