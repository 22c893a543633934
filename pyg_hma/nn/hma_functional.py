r"""The math of :class:`~pyg_hma.nn.HMAReadout`, written once: its forward
(:func:`readout_forward`), the queue as the RMA block reads it
(:func:`memory_tokens`, :func:`memory_mask`) and its write
(:func:`write_queues`), on weights and state ``P[prefix + name]`` with a
leading seed dimension (:mod:`pyg_hma.nn.stacked`). The module's own
``forward`` and ``write`` run these with ``S = 1``; the seed-batched trainer
runs them on S stacked readouts. Every option of the readout (both styles)
is read from the module :obj:`ro` passed in.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .queue import write_queue
from .stacked import linear
from .utils import (attention_block, gather_from_all_ranks,
                    gather_rows_with_grad, nonfinite_rows)


def _embed(table: Tensor, index: Tensor) -> Tensor:
    # Per-seed lookup: table [S, V, l], index [S, R] -> [S, R, l].
    S, V, _ = table.shape
    offset = torch.arange(S, device=index.device).view(S, 1) * V
    return F.embedding(index + offset, table.reshape(S * V, -1))


def memory_tokens(ro, P: Dict[str, Tensor], pre: str) -> Tensor:
    r"""Every seed's queue as its RMA block reads it, ``[S, M, d + l]``:
    tokens :math:`[\mathbf{k}_j \| \mathbf{E}_{y_j}]` (the label part looked
    up now, or the copy made at write time with
    :obj:`queue_stores="label_tokens"`)."""
    keys = P[pre + 'queue_keys']
    if ro.queue_label_tokens is not None:
        return torch.cat([keys, P[pre + 'queue_label_tokens']], dim=-1)
    labels = P[pre + 'queue_labels']
    if ro.queue_init == 'random':
        # Unlabelled (random) entries are attended: they get the "unknown"
        # label.
        labels = torch.where(labels >= 0, labels, ro.num_classes)
    else:  # empty entries are masked out; any valid row will do
        labels = labels.clamp(min=0)
    return torch.cat([keys, _embed(P[pre + 'label_emb.weight'], labels)],
                     dim=-1)


def memory_mask(ro, P: Dict[str, Tensor], pre: str) -> Tensor:
    r"""Which queue entries the RMA block attends to, ``[S, M]``: the filled
    ones, or all of them with :obj:`queue_init="random"`."""
    labels = P[pre + 'queue_labels']
    if ro.queue_init == 'random':
        return torch.ones_like(labels, dtype=torch.bool)
    return labels >= 0


def readout_forward(ro, P: Dict[str, Tensor], pre: str, x: Tensor,
                    y: Optional[Tensor], key: Optional[Tensor], noise,
                    training: bool) -> Tensor:
    r""":class:`~pyg_hma.HMAReadout` :obj:`ro` per seed: :obj:`x`
    ``[S, B, d]``, :obj:`y` ``[S, B]`` (written into each seed's queue in
    training, never read to predict), :obj:`key` ``[S, B, d]`` or ``None``
    (written instead of :obj:`x`); returns logits ``[S, B, out]``."""
    S, B, d = x.shape
    emb = P[pre + 'label_emb.weight']  # [S, C + 1, l]
    unknown = emb[:, ro.num_classes]
    z = torch.cat([x, unknown.unsqueeze(1).expand(S, B, -1)], dim=-1)
    eye = torch.eye(B, dtype=torch.bool, device=x.device).expand(S, B, B)
    if ro.rma_block is not None:
        # Each sample attends over itself (the diagonal) and the filled
        # queue entries; never over the rest of the batch.
        filled = memory_mask(ro, P, pre).unsqueeze(1).expand(S, B, -1)
        mask = torch.cat([eye, filled], dim=2)
        z = attention_block(ro.rma_block, P, pre + 'rma_block.',
                            torch.cat([z, memory_tokens(ro, P, pre)], dim=1),
                            B, mask, noise, training)
    if ro.sma_block is not None:
        tokens = [z]
        if ro.abd and training and ro.abd_across_ranks:
            if S != 1:
                raise NotImplementedError(
                    'abd_across_ranks trains one readout per process')
            tokens.append(gather_rows_with_grad(z[0])[1].unsqueeze(0))
        if ro.slots is not None:
            slots = P[pre + 'slots'].reshape(S, -1, ro.in_channels)
            slot_labels = ro.slot_labels.to(x.device).expand(S, -1)
            tokens.append(torch.cat([slots, _embed(emb, slot_labels)],
                                    dim=-1))
        across = ro.abd and (training or ro.inference == 'batch')
        mask = None
        if not across:  # each sample sees itself and the slots only
            mask = torch.cat([eye, eye.new_ones(S, B,
                                                ro.slot_labels.numel())],
                             dim=2)
        z = attention_block(ro.sma_block, P, pre + 'sma_block.',
                            torch.cat(tokens, dim=1), B, mask, noise,
                            training)
    if ro.head == 'feature':
        z = z[..., :ro.in_channels]
    elif ro.head == 'label':
        z = z[..., ro.in_channels:]
    out = linear(z, P[pre + 'lin.weight'], P[pre + 'lin.bias'])
    if training and y is not None and ro.rma:
        write_queues(ro, P, pre, (x if key is None else key).detach(), y)
    return out


@torch.no_grad()
def write_queues(ro, P: Dict[str, Tensor], pre: str, keys: Tensor,
                 labels: Tensor):
    r""":meth:`HMAReadout.write <pyg_hma.HMAReadout.write>` for every seed:
    :obj:`keys` ``[S, B, d]``, :obj:`labels` ``[S, B]``. A group of one
    first gathers the rows of every :mod:`torch.distributed` rank."""
    if ro.memory_size == 0 or ro.queue_write == 'never':
        return
    S, B = keys.shape[:2]
    labels = labels.reshape(S, B).long()
    if S == 1:
        gathered = gather_from_all_ranks(keys[0], labels[0])
        keys, labels = gathered[0].unsqueeze(0), gathered[1].unsqueeze(0)
        B = labels.size(1)
    skipped = P.get(pre + 'num_skipped_writes')
    if ro.queue_write == 'divisible' and (B == 0 or ro.memory_size % B):
        if skipped is not None:
            skipped.add_(B)
        return
    valid = (~nonfinite_rows(keys) & (labels >= 0)
             & (labels < ro.num_classes))
    extra = []
    if ro.queue_label_tokens is not None:
        # A snapshot: later changes of the embedding do not reach it.
        queue_tokens = P[pre + 'queue_label_tokens']
        tokens = _embed(P[pre + 'label_emb.weight'].detach(),
                        labels.clamp(0, ro.num_classes - 1)
                        ).to(queue_tokens.dtype)
        valid = valid & ~nonfinite_rows(tokens)
        extra = [(queue_tokens, tokens)]
    count = write_queue(P[pre + 'queue_keys'], P[pre + 'queue_labels'],
                        P[pre + 'queue_ptr'],
                        keys.to(P[pre + 'queue_keys'].dtype), labels, valid,
                        extra)
    if skipped is not None:
        skipped.add_(B - count)


__all__ = ['readout_forward', 'write_queues', 'memory_tokens',
           'memory_mask']
