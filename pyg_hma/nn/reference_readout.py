r"""The HMA module of the paper's released code, as a layer of its own."""
from typing import Any

from .hma_readout import STYLES, HMAReadout


class ReferenceHMAReadout(HMAReadout):
    r"""The HMA readout of the paper's released code (qiuzh20/HMA,
    ``CIGA-main/models/HMA/model.py`` and ``MAB_modules.py``), defects
    included, for faithfulness checks: the same label token, queue and
    attention blocks (:class:`~pyg_hma.nn.MaskedAttentionBlock`) as
    :class:`~pyg_hma.nn.HMAReadout`, with the released code's choices
    (:data:`~pyg_hma.nn.hma_readout.STYLES` ``['reference']``): a head on
    the label part of the token only, attention scaled by the token width,
    a linear residual and no output projection, a 4x feed-forward with
    dropout inside, separate key/value norms with :math:`\epsilon=10^{-12}`,
    zero-initialised (identical) slots, a queue initialised at random that
    stores label tokens and is written only when the batch divides its size.
    ``docs/hma.md`` lists where and why :class:`HMAReadout` differs.

    Its state dict is that of ``HMAReadout(..., style='reference')``, which
    it is; the runners build it for ``--set hma.style=reference``.

    Args:
        in_channels (int): the width :math:`d` of the pooled embeddings.
        num_classes (int): number of classes.
        **kwargs: the other arguments of :class:`HMAReadout` (a style
            option given here overrides the released code's value).

    Shapes:
        - **input:** embeddings :math:`(B, d)`, labels :math:`(B)` in
          training
        - **output:** logits :math:`(B, \text{out\_channels})`
    """
    def __init__(self, in_channels: int, num_classes: int, **kwargs: Any):
        if kwargs.get('style', 'reference') != 'reference':
            raise ValueError(f"ReferenceHMAReadout is the 'reference' style; "
                             f"use HMAReadout for style="
                             f"'{kwargs['style']}'")
        kwargs['style'] = 'reference'
        super().__init__(in_channels, num_classes, **kwargs)


__all__ = ['ReferenceHMAReadout', 'STYLES']
