r"""S copies of one model, trained as one: the model of seed-batched training
(:mod:`pyg_hma.train.seed_batch`).

Every parameter and buffer of the S models is stacked along a new leading
*seed* dimension (:class:`StackedModel`), and the forward pass runs the
modules' own math with that dimension: each encoder's
:meth:`~pyg_hma.models.union.StackedEncoder.forward_stacked` and
:class:`~pyg_hma.HMAReadout`'s :func:`~pyg_hma.nn.hma_functional.readout_forward`,
the very functions a module's own ``forward`` runs with ``S = 1``. So the
seeds stay apart:

* node tensors live in a padded layout ``[S, N_max, d]`` (seed ``s``'s own
  batch in rows ``:N_s``, :class:`~pyg_hma.models.union.UnionBatch`), so
  every linear layer is one batched matrix product with per-seed weights;
* message passing runs once on the disjoint union of the S batches; every
  node sums its messages in edge order, as alone;
* BatchNorm statistics (and running statistics) are computed per seed over
  its real nodes only, with the kernel of :class:`torch.nn.BatchNorm1d`;
* pooled embeddings are ``[S, B, d]``, so HMA's attention blocks run with
  the seed as the batch dimension, and each seed writes its own queue;
* dropout masks come from one :class:`torch.Generator` per seed and cover
  that seed's real rows only (:class:`~pyg_hma.nn.stacked.Noise`);
* with static shapes (``UnionBatch(..., pad=...)``, for ``torch.compile``
  and CUDA graphs) the union is padded to node and edge budgets, BatchNorm
  counts real rows with a mask tensor, and dropout masks are hashed from a
  per-seed key (``Noise(static=True)``), so the compiled forward holds no
  generator and no host-side sizes.

Supported: :class:`~pyg_hma.models.build.LinearClassifier` and
:class:`~pyg_hma.HMAClassifier` (either readout style, with or without
momentum encoder) around any
:class:`~pyg_hma.models.union.StackedEncoder` (the GNNs, G-Mixup's GIN,
Colored MNIST's MLP and CNN). :func:`unsupported_reason` says why a model is
not. The layers' names are re-exported here.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..models.build import LinearClassifier
from ..nn import HMAClassifier, HMAReadout
from ..nn.momentum import momentum_step
from ..models.union import ImageUnion, StackedEncoder, UnionBatch, union_of
from ..nn.hma_functional import readout_forward, write_queues
from ..nn.stacked import (Noise, add_rows, hash32, layer_norm, linear,
                          scale_rows, seed_batch_norm, sum_of_embeddings)
from ..nn.utils import attention_block

# --------------------------------------------------------------------------
# Support
# --------------------------------------------------------------------------


def unsupported_reason(model: nn.Module) -> Optional[str]:
    r"""``None`` when :class:`StackedModel` can batch S copies of
    :obj:`model`, else why not."""
    if isinstance(model, LinearClassifier):
        encoder = model.encoder
    elif isinstance(model, HMAClassifier):
        encoder = model.encoder
        if not isinstance(model.readout, HMAReadout):
            return f'readout {type(model.readout).__name__}'
    else:
        return f'model {type(model).__name__}'
    if not isinstance(encoder, StackedEncoder):
        return f'backbone {type(encoder).__name__}'
    return None


def encoder_forward(encoder: StackedEncoder, P: Dict[str, Tensor], pre: str,
                    data, noise: Noise, training: bool) -> Tensor:
    r""":obj:`encoder`'s math on every seed (its
    :meth:`~pyg_hma.models.union.StackedEncoder.forward_stacked`): pooled
    embeddings ``[S, B, d]``."""
    return encoder.forward_stacked(P, pre, data, noise, training)


# --------------------------------------------------------------------------
# The stacked model
# --------------------------------------------------------------------------

class StackedModel:
    r"""S models of one architecture as one: every parameter and buffer of
    their ``state_dict`` stacked along a leading seed dimension.

    Args:
        models: the S models (identical architecture; :obj:`models[0]` is
            the template whose configuration the forward pass reads).
    """
    def __init__(self, models: Sequence[nn.Module]):
        template = models[0]
        reason = unsupported_reason(template)
        if reason is not None:
            raise NotImplementedError(f'seed batching: {reason}')
        self.template = template
        self.S = len(models)
        self.keys = list(template.state_dict().keys())
        states = [m.state_dict() for m in models]
        trainable = {n for n, p in template.named_parameters()
                     if p.requires_grad}
        self.param_names = [n for n, p in template.named_parameters()
                            if p.requires_grad]
        self.tensors: Dict[str, Tensor] = {}
        for k in self.keys:
            t = torch.stack([s[k].detach() for s in states]).clone()
            if k in trainable:
                t.requires_grad_(True)
            self.tensors[k] = t
        self.training = True
        self._encoder_forward = encoder_forward
        self._readout_forward = readout_forward
        mom = getattr(template, 'momentum_encoder', None)
        self._momentum = None
        if isinstance(template, HMAClassifier) and mom is not None:
            online = [n for n, _ in template.encoder.named_parameters()]
            buffers = [n for n, _ in template.encoder.named_buffers()
                       if 'encoder.' + n in self.tensors]
            self._momentum = (
                mom.momentum,
                [self.tensors['momentum_encoder.module.' + n] for n in online],
                [self.tensors['encoder.' + n] for n in online],
                [self.tensors['momentum_encoder.module.' + n]
                 for n in buffers],
                [self.tensors['encoder.' + n] for n in buffers])

    def compile(self, mode: str = 'default'):
        r"""Compiles the training forward (the encoders' and the readout's
        stacked functions) with :func:`torch.compile`, automatic dynamic
        shapes as :func:`~pyg_hma.train.fit` does. Give it batches with
        static shapes (:class:`UnionBatch` with ``pad``) and static noise
        streams (``Noise(static=True)``): drawing from a generator breaks
        the graph. On a GPU the stacked tensors are marked as static
        addresses, so that ``'reduce-overhead'`` can capture one CUDA graph
        per shape with the in-place updates of BatchNorm's statistics and
        the queues."""
        for t in self.tensors.values():
            if t.is_cuda:
                torch._dynamo.mark_static_address(t)
        self._encoder_forward = torch.compile(encoder_forward, mode=mode)
        self._readout_forward = torch.compile(readout_forward, mode=mode)
        return self

    def parameters(self) -> List[Tensor]:
        r"""The trainable stacked tensors, in the order of
        ``[p for p in model.parameters() if p.requires_grad]``."""
        return [self.tensors[n] for n in self.param_names]

    def train(self, mode: bool = True):
        self.training = mode

    def state_dict(self, s: int) -> Dict[str, Tensor]:
        r"""Seed :obj:`s`'s ``state_dict`` (copies), loadable into the
        template's architecture."""
        return {k: self.tensors[k][s].detach().clone() for k in self.keys}

    def load_into(self, s: int, model: nn.Module):
        r"""Copies seed :obj:`s`'s weights and buffers into :obj:`model`."""
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(self.tensors[k][s])

    def embed(self, data: UnionBatch, noise: Noise) -> Tensor:
        r"""The encoder's pooled embeddings of every seed, ``[S, B, d]``."""
        return self._encoder_forward(self.template.encoder, self.tensors,
                                     'encoder.', data, noise, self.training)

    def head(self, h: Tensor) -> Tensor:
        r"""The linear head (:class:`~pyg_hma.models.build.LinearClassifier`)
        of every seed on :obj:`h` ``[S, B, d]``."""
        return linear(h, self.tensors['head.weight'],
                      self.tensors['head.bias'])

    def __call__(self, data: UnionBatch, noise: Noise,
                 y: Optional[Tensor] = None) -> Tensor:
        r"""Logits ``[S, B, out]``; :obj:`y` ``[S, B]`` integer labels for
        HMA's queues."""
        m, P, training = self.template, self.tensors, self.training
        h = self.embed(data, noise)
        if isinstance(m, LinearClassifier):
            return self.head(h)
        key = None
        if training and y is not None and self._momentum is not None:
            momentum, *tensors = self._momentum
            with torch.no_grad():
                momentum_step(*tensors, momentum)
                key = self._encoder_forward(
                    m.momentum_encoder.module, P, 'momentum_encoder.module.',
                    data, noise, training)
        return self._readout_forward(m.readout, P, 'readout.', h, y, key,
                                     noise, training)


__all__ = ['StackedModel', 'unsupported_reason', 'encoder_forward',
           'UnionBatch', 'ImageUnion', 'union_of', 'Noise', 'hash32', 'linear',
           'add_rows', 'scale_rows', 'layer_norm', 'seed_batch_norm',
           'sum_of_embeddings', 'attention_block', 'readout_forward',
           'write_queues']
