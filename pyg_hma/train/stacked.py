r"""S copies of one model, trained as one: the layers of seed-batched
training (:mod:`pyg_hma.train.seed_batch`).

Every parameter and buffer of the S models is stacked along a new leading
*seed* dimension (:class:`StackedModel`); the forward pass is written out
functionally for the supported modules and keeps the S models apart:

* node tensors live in a padded layout ``[S, N_max, d]`` (seed ``s``'s own
  batch in rows ``:N_s``), so every linear layer is one batched matrix
  product (``baddbmm``) with per-seed weights;
* message passing runs once on the disjoint union of the S batches (the
  edge indices of seed ``s`` are shifted by ``s * N_max``): without edge
  features as one sparse matrix product per layer (the union's adjacency,
  built once per batch), with them by PyG's gather and scatter; either way
  every node sums its messages in edge order, as alone;
* BatchNorm statistics (and running statistics) are computed per seed over
  its real nodes only, with the kernel of :class:`torch.nn.BatchNorm1d`;
* pooled embeddings are ``[S, B, d]`` (all seeds of a group see batches of
  the same size, as they read the same training split with the same batch
  size), so HMA's attention blocks run with the seed as the batch
  dimension, and each seed writes its own queue;
* dropout masks come from one :class:`torch.Generator` per seed and cover
  that seed's real rows only, so a seed's masks do not depend on the other
  seeds of its group;
* with static shapes (``UnionBatch(..., pad=...)``, for ``torch.compile``
  and CUDA graphs) the union is padded to node and edge budgets, BatchNorm
  counts real rows with a mask tensor, and dropout masks are hashed from a
  per-seed key (:class:`Noise` with ``static=True``), so the compiled
  forward holds no generator and no host-side sizes.

* OGB's atom and bond encoders (one embedding table per feature column)
  are stacked per seed: every row looks its features up in its own seed's
  tables (one ``embedding_bag`` over the concatenated tables, summing the
  columns);
* a virtual node is ``[S, B, d]`` (row ``(s, g)``: seed ``s``'s graph
  ``g``), and the BatchNorms of its MLP are per seed over its ``B`` graphs.

Supported: :class:`~pyg_hma.models.build.LinearClassifier` and
:class:`~pyg_hma.HMAClassifier` (with or without momentum encoder) around a
:class:`~pyg_hma.models.gnn.GNN` (GCN or GIN, with or without virtual node
and OGB atom/bond encoders, any pooling, dropout, residual) or G-Mixup's
GIN (:class:`~pyg_hma.models.tu_gin.GMixupGIN`, table 4), or Colored
MNIST's :class:`~pyg_hma.models.mnist.IRMMLP` and
:class:`~pyg_hma.models.mnist.SmallCNN` on image batches
(:class:`ImageUnion`); :data:`ENCODERS`
maps each encoder type to its stacked forward.
:func:`unsupported_reason` says why a model is not.

The union of batches, the functional layers and the random streams live in
:mod:`pyg_hma.train.stacked_layers`, the stacked forwards of the modules in
:mod:`pyg_hma.train.stacked_models`; both are re-exported here.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..models.build import LinearClassifier
from ..nn import HMAClassifier, HMAReadout
from ..nn.momentum import momentum_step
from .stacked_layers import (ImageUnion, Noise, UnionBatch, add_rows,
                             hash32, layer_norm, linear, scale_rows,
                             seed_batch_norm, sum_of_embeddings, union_of)
from .stacked_models import (ENCODERS, attention_block, cnn_forward,
                             encoder_forward, gmixup_gin_forward,
                             gnn_forward, mlp_forward, readout_forward,
                             write_queues)

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
        if type(model.readout) is not HMAReadout:
            return f'readout {type(model.readout).__name__}'
    else:
        return f'model {type(model).__name__}'
    if type(encoder) not in ENCODERS:
        return f'backbone {type(encoder).__name__}'
    return None


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


__all__ = ['StackedModel', 'unsupported_reason', 'UnionBatch', 'ImageUnion',
           'union_of', 'Noise', 'hash32', 'linear', 'add_rows', 'scale_rows',
           'layer_norm', 'seed_batch_norm', 'sum_of_embeddings', 'ENCODERS',
           'encoder_forward', 'gnn_forward', 'gmixup_gin_forward',
           'mlp_forward', 'cnn_forward', 'attention_block',
           'readout_forward', 'write_queues']
