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
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..models.build import LinearClassifier
from ..models.gnn import GNN, POOLINGS, gcn_norm, neighbour_sum
from ..models.mnist import IRMMLP, SmallCNN
from ..models.tu_gin import GMixupGIN
from ..nn import HMAClassifier, HMAReadout
from ..nn.utils import nonfinite_rows

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
# The union of S batches
# --------------------------------------------------------------------------

class UnionBatch:
    r"""S graph batches (one per seed, with the same number of graphs
    :obj:`B`) in the padded layout of :class:`StackedModel`.

    Attributes: :obj:`x` ``[S * N_max, F]``, :obj:`edge_index` (shifted to
    padded positions), :obj:`edge_attr` (edge features in the order of
    :obj:`edge_index`, or ``None``), :obj:`edge_seed` (every edge's seed),
    :obj:`batch` (graph ``s * B + g``; padding rows in
    graph ``S * B``), :obj:`y` ``[S, B, ...]``, :obj:`num_nodes` (real
    nodes per seed, a list), :obj:`size` ``N_max``.

    With :obj:`pad` ``(node_step, edge_step)`` the shapes are static, as
    :class:`~pyg_hma.loader.PaddedLoader` makes them for one model: ``N_max``
    is rounded up from the largest batch's nodes plus one to a multiple of
    ``node_step``, and the union holds ``S`` times the largest batch's
    edges rounded up to a multiple of ``edge_step``, the extra edges being
    self loops on the last padding node (edge features zero), so no
    message reaches a real node; :obj:`rows` is then a mask.
    """
    def __init__(self, batches: Sequence,
                 pad: Optional[Tuple[int, int]] = None):
        S = len(batches)
        B = int(batches[0].num_graphs)
        if any(int(b.num_graphs) != B for b in batches):
            raise ValueError('seed-batched training needs batches with the '
                             'same number of graphs for every seed')
        num_nodes = [int(b.x.size(0)) for b in batches]
        N = max(num_nodes)
        self.static = pad is not None
        if self.static:  # room for one padding node in every seed's rows
            N = _round_up(N + 1, pad[0])
        first = batches[0].x
        device = first.device
        self.S, self.B, self.size, self.num_nodes = S, B, N, num_nodes
        starts = np.arange(S) * N
        # Real node positions in the padded layout, built on the host.
        pos = np.concatenate([np.arange(n) + s for n, s in
                              zip(num_nodes, starts)])
        pos_t = torch.from_numpy(pos).to(device)
        self.pos = pos_t
        x = first.new_zeros((S * N, ) + tuple(first.shape[1:]))
        x.index_copy_(0, pos_t, torch.cat([b.x for b in batches]))
        self.x = x
        edges = [int(b.edge_index.size(1)) for b in batches]
        extra = 0
        if self.static:  # self loops on the last seed's last padding node
            # S budgets of the largest batch's edges, as for the nodes: a
            # step's shape is set by its largest batch, so steps take a
            # handful of shapes (one CUDA graph each), whatever S.
            extra = S * _round_up(max(max(edges), 1), pad[1]) - sum(edges)
        shifts = torch.from_numpy(np.repeat(
            np.append(starts, starts[-1]), edges + [extra])).to(device)
        edge_index = [b.edge_index for b in batches]
        if extra:
            edge_index.append(batches[0].edge_index.new_full((2, extra),
                                                             N - 1))
        self.edge_index = torch.cat(edge_index, dim=1) + shifts
        self._edge_shifts = shifts
        #: Every seed's number of edges (the static budget's extra self
        #: loops counted with the last seed, whose padding node holds them).
        self.edge_counts = edges[:-1] + [edges[-1] + extra]
        self.edge_attr = None
        if getattr(batches[0], 'edge_attr', None) is not None:
            attr = [b.edge_attr for b in batches]
            if extra:
                attr.append(attr[0].new_zeros((extra, ) + attr[0].shape[1:]))
            self.edge_attr = torch.cat(attr)
        batch = torch.full((S * N, ), S * B, dtype=torch.long, device=device)
        graph_shift = np.repeat(np.arange(S) * B, num_nodes)
        batch.index_copy_(0, pos_t, torch.cat([b.batch for b in batches])
                          + torch.from_numpy(graph_shift).to(device))
        self.batch = batch
        self.y = torch.stack([b.y for b in batches])
        self.env = None  # graph datasets carry no environments
        self._gcn_norm = None
        #: What BatchNorm and dropout read as a seed's real rows: the list
        #: of real node counts, or with static shapes the mask ``[S, N]``
        #: (a tensor, so that a compiled step does not specialise on them).
        self.rows = num_nodes
        if self.static:
            counts = torch.tensor(num_nodes, device=device)
            self.rows = (torch.arange(N, device=device).view(1, N)
                         < counts.view(S, 1))

    @property
    def edge_seed(self) -> Tensor:
        r"""The seed of every edge, ``[E]``."""
        return self._edge_shifts // self.size

    def gcn_norm(self, dtype) -> Tuple[Tensor, Tensor]:
        r"""``(deg, norm)`` of OGB's GCN layer (degree with a self loop),
        computed once per batch."""
        if torch.compiler.is_compiling():  # no cache inside a graph
            return gcn_norm(self.edge_index, self.S * self.size, dtype)
        if self._gcn_norm is None:
            self._gcn_norm = gcn_norm(self.edge_index, self.S * self.size,
                                      dtype)
        return self._gcn_norm

    def aggregate(self, x: Tensor, weighting: str) -> Tensor:
        r"""The sum over every node's incoming edges of its sources' rows
        of :obj:`x` ``[S * N_max, d]``, with weight 1
        (:obj:`weighting="sum"`, GIN) or OGB's GCN normalisation
        (:obj:`"gcn"`): :func:`~pyg_hma.models.gnn.neighbour_sum` on the
        union (a sparse matrix product on a CPU, its adjacency built once
        per batch and reused by every layer and the momentum encoder)."""
        weight = self.gcn_norm(x.dtype)[1] if weighting == 'gcn' else None
        return neighbour_sum(x, self.edge_index, weight)


class ImageUnion:
    r"""S batches of images (:class:`~pyg_hma.loader.TensorBatch`, one per
    seed, with the same batch size :obj:`B`), stacked: :obj:`x`
    ``[S, B, C, H, W]``, :obj:`y` ``[S, B, ...]``, :obj:`env` ``[S, B]`` (the
    samples' environments, or ``None``)."""
    def __init__(self, batches: Sequence):
        self.S, self.B = len(batches), int(batches[0].num_graphs)
        if any(int(b.num_graphs) != self.B for b in batches):
            raise ValueError('seed-batched training needs batches of the '
                             'same size for every seed')
        self.x = torch.stack([b.x for b in batches])
        self.y = torch.stack([b.y for b in batches])
        self.env = (None if batches[0].env is None else
                    torch.stack([b.env.view(-1).long() for b in batches]))


def union_of(batches: Sequence, pad: Optional[Tuple[int, int]] = None):
    r"""The S batches of a step as the stacked model reads them: a
    :class:`UnionBatch` of graph batches (with static shapes when
    :obj:`pad` is given) or an :class:`ImageUnion` of image batches."""
    if getattr(batches[0], 'edge_index', None) is None:
        return ImageUnion(batches)
    return UnionBatch(batches, pad)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


# --------------------------------------------------------------------------
# Functional layers with a leading seed dimension
# --------------------------------------------------------------------------

def _bmm_linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class _RowsLinear(torch.autograd.Function):
    # The batched linear layer, with the weight's and bias's gradients
    # reduced over each seed's real rows alone (one GEMM per seed of the
    # seed's own shape), not over the group's padded N.
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Optional[Tensor],
                rows: List[int]) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.rows, ctx.has_bias = rows, b is not None
        return _bmm_linear(x, w, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        grad_x = torch.bmm(grad, w) if need_x else None
        grad_w = grad_b = None
        if need_w:
            grad_w = torch.stack([grad[s, :n].t().mm(x[s, :n])
                                  for s, n in enumerate(ctx.rows)])
        if need_b and ctx.has_bias:
            grad_b = torch.stack([grad[s, :n].sum(0)
                                  for s, n in enumerate(ctx.rows)])
        return grad_x, grad_w, grad_b, None


def linear(x: Tensor, w: Tensor, b: Optional[Tensor],
           rows=None) -> Tensor:
    r""":math:`x_s W_s^T + b_s` for :obj:`x` ``[S, N, in]``, :obj:`w`
    ``[S, out, in]``, :obj:`b` ``[S, out]``.

    Node features (padded rows): give :obj:`rows`, the real rows per seed (a
    list), and the gradients of :obj:`w` and :obj:`b` are reduced over each
    seed's real rows alone. A batched GEMM's reduction over the padded
    ``N`` splits that dimension by its length, so its float32 rounding
    would depend on how far the group pads a seed's rows: a seed's run would
    depend on its group (``tests/test_invariance.py``)."""
    if rows is None or isinstance(rows, Tensor) or not (
            torch.is_grad_enabled() and w.requires_grad):
        return _bmm_linear(x, w, b)
    return _RowsLinear.apply(x, w, b, list(rows))


class _ScaleRows(torch.autograd.Function):
    # x [S, N, d] times a scalar per seed; the scalar's gradient summed over
    # each seed's real rows only (a contiguous [n_s * d] reduction, as the
    # seed alone reduces it), never over the group's padded N.
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, rows: List[int]) -> Tensor:
        ctx.save_for_backward(x, scale)
        ctx.rows = rows
        return x * scale.view(-1, 1, 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, scale = ctx.saved_tensors
        grad_x = grad * scale.view(-1, 1, 1) if ctx.needs_input_grad[0] \
            else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            grad_scale = torch.stack([
                (grad[s, :n] * x[s, :n]).sum()
                for s, n in enumerate(ctx.rows)]).view_as(scale)
        return grad_x, grad_scale, None


def scale_rows(x: Tensor, scale: Tensor, rows) -> Tensor:
    r""":math:`x_s \cdot c_s` for :obj:`x` ``[S, N, d]`` and one scalar per
    seed :obj:`scale` ``[S]`` (GIN's :math:`1 + \epsilon`). With :obj:`rows`
    a list of real rows per seed, the gradient of :obj:`scale` is reduced
    over each seed's real rows alone, so that it does not depend on how
    far the group pads them: broadcasting's reduction over the padded
    ``[N * d]`` rounds differently with ``N``, the one kernel that made a
    seed's float32 run depend on its group (``tests/test_invariance.py``)."""
    if isinstance(rows, Tensor) or not scale.requires_grad:
        return x * scale.view(-1, 1, 1)
    return _ScaleRows.apply(x, scale, list(rows))


class _AddRows(torch.autograd.Function):
    # x [S, N, d] plus one row per seed [S, 1, d]; the row's gradient summed
    # over each seed's real rows alone.
    @staticmethod
    def forward(ctx, x: Tensor, row: Tensor, rows: List[int]) -> Tensor:
        ctx.rows = rows
        return x + row

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_row = None
        if ctx.needs_input_grad[1]:
            grad_row = torch.stack([grad[s, :n].sum(0, keepdim=True)
                                    for s, n in enumerate(ctx.rows)])
        return grad, grad_row, None


def add_rows(x: Tensor, row: Tensor, rows) -> Tensor:
    r""":math:`x_s + r_s` for :obj:`x` ``[S, N, d]`` and one row per seed
    :obj:`row` ``[S, 1, d]`` (GCN's root embedding), the row's gradient
    reduced over each seed's real rows (:obj:`rows`, a list) alone, as in
    :func:`linear`."""
    if isinstance(rows, Tensor) or not row.requires_grad:
        return x + row
    return _AddRows.apply(x, row, list(rows))


def layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    out = F.layer_norm(x, x.shape[-1:], eps=eps)
    return torch.addcmul(b.unsqueeze(1), out, w.unsqueeze(1))


_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: Tensor, c: int) -> Tensor:
    # (x * c) mod 2^32 for int64 x in [0, 2^32), without int64 overflow.
    return (((((x >> 16) * c) & 0xFFFF) << 16) + (x & 0xFFFF) * c) & _MASK32


def hash32(x: Tensor) -> Tensor:
    r"""An integer hash of int64 values in ``[0, 2^32)`` onto the same range
    (Chris Wellons' ``lowbias32``), in int64 arithmetic that cannot
    overflow, so that every device and compiled graph gives the same bits."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class Noise:
    r"""Per-seed random streams: dropout masks of seed ``s`` are drawn from
    its own generator over its real rows only.

    With :obj:`static` (static shapes, :class:`UnionBatch` with ``pad``),
    masks are computed instead of drawn, so that a compiled step holds no
    generator: :meth:`new_step` draws one 32-bit key per seed from its
    generator, and the keep decision of element ``(r, c)`` of a seed's
    ``[R, d]`` rows in the step's ``k``-th dropout is a 32-bit integer hash
    of ``(key, k, r * d + c)`` (:func:`hash32`). A seed's masks then depend
    neither on the other seeds of its group nor on the padding."""
    def __init__(self, generators: Sequence[torch.Generator],
                 static: bool = False):
        self.generators = list(generators)
        self.static = static
        self.keys: Optional[Tensor] = None
        self.calls = 0

    def new_step(self):
        r"""Static streams: this step's key of every seed."""
        if self.static:
            self.keys = torch.stack([
                torch.randint(2 ** 32, (), generator=g, device=g.device)
                for g in self.generators])
            self.calls = 0

    def dropout(self, x: Tensor, p: float, rows=None) -> Tensor:
        r""":obj:`x` ``[S, R, d]``; :obj:`rows`: real rows per seed, a list
        (all when ``None``; static streams cover every row)."""
        if p <= 0.0:
            return x
        if p >= 1.0:
            return torch.zeros_like(x)
        keep = 1.0 - p
        if self.static:
            if self.keys is None:
                raise RuntimeError('Noise.new_step() must run before each '
                                   'step with static streams')
            S, R, d = x.shape
            base = hash32((self.keys + self.calls * _GOLDEN) & _MASK32)
            self.calls += 1
            index = torch.arange(R * d, device=x.device).view(1, R, d)
            draw = hash32((base.view(S, 1, 1) + index) & _MASK32)
            mask = (draw < int(keep * 2 ** 32)).to(x.dtype)
            return x * mask.mul_(1.0 / keep)
        rows = None if isinstance(rows, Tensor) else rows
        if x.device.type == 'cpu':
            # The draws of `bernoulli_(keep)` on a CPU without MKL's (its
            # default kernel: one float64 uniform per element, kept when
            # below `keep`), bitwise, at a third less cost (no distribution
            # object per element), and the same on every CPU (MKL's
            # bernoulli_, used on Intel CPUs, draws another stream). Padding
            # rows stay 0, so they are kept.
            uniform = torch.zeros(x.shape, dtype=torch.float64)
            for s, gen in enumerate(self.generators):
                part = uniform[s] if rows is None else uniform[s, :rows[s]]
                part.uniform_(generator=gen)
            mask = (uniform < keep).to(x.dtype)
        else:
            mask = torch.ones_like(x)
            for s, gen in enumerate(self.generators):
                part = mask[s] if rows is None else mask[s, :rows[s]]
                part.bernoulli_(keep, generator=gen)
        # One product with the scaled mask: the same values and gradients,
        # bitwise, as `x * mask * (1 / keep)`, the mask being 0 or 1.
        return x * mask.mul_(1.0 / keep)

    def randint(self, high: int, size: int, device) -> Tensor:
        return torch.stack([torch.randint(0, high, (size, ), generator=g,
                                          device=device)
                            for g in self.generators])


def seed_batch_norm(x: Tensor, P: Dict[str, Tensor], pre: str,
                      bn: nn.BatchNorm1d, rows, training: bool) -> Tensor:
    r"""BatchNorm of every seed over its real rows: :obj:`x` ``[S, N, C]``,
    seed ``s``'s real rows are ``x[s, :rows[s]]`` (:obj:`rows` a list), or
    those where the mask :obj:`rows` ``[S, N]`` is ``True`` (static shapes:
    the same statistics as a masked matrix product). In training, each seed
    runs :func:`torch.nn.functional.batch_norm` (the kernel of
    :class:`torch.nn.BatchNorm1d`) on its real rows, which updates its
    running statistics (``P[pre + 'running_mean'][s]`` ...) in place; the
    padding rows of the output are 0. (One fused kernel per seed beat a
    masked form batched over the seeds at every width measured, 1.0-1.6x
    forward and backward, and gives the statistics ``fit``'s BatchNorm
    gives.) In eval mode the running statistics normalise all seeds at
    once."""
    S, N, C = x.shape
    if not training:
        mean = P[pre + 'running_mean'].unsqueeze(1)
        var = P[pre + 'running_var'].unsqueeze(1)
        out = (x - mean) * torch.rsqrt(var + bn.eps)
        if bn.affine:
            out = torch.addcmul(P[pre + 'bias'].unsqueeze(1), out,
                                P[pre + 'weight'].unsqueeze(1))
        return out
    if bn.track_running_stats and bn.momentum is None:
        raise NotImplementedError(
            'BatchNorm with momentum=None (cumulative average)')
    tracked = bn.track_running_stats
    if tracked:
        P[pre + 'num_batches_tracked'].add_(1)
    if isinstance(rows, Tensor):
        return _masked_seed_batch_norm(x, P, pre, bn, rows, tracked)
    # Split, not indexed, so that the backward pass is one concatenation
    # (indexing seed s would give every seed a zero gradient of all of x).
    sizes = [k for n in rows for k in (n, N - n)]
    parts = x.reshape(S * N, C).split(sizes)
    affine = ((P[pre + 'weight'].unbind(0), P[pre + 'bias'].unbind(0))
              if bn.affine else ([None] * S, [None] * S))
    pieces = []
    for s, n in enumerate(rows):
        pieces.append(F.batch_norm(
            parts[2 * s], P[pre + 'running_mean'][s] if tracked else None,
            P[pre + 'running_var'][s] if tracked else None,
            affine[0][s], affine[1][s], True,
            bn.momentum if tracked else 0.0, bn.eps))
        if n < N:
            pieces.append(x.new_zeros(N - n, C))
    return torch.cat(pieces).view(S, N, C)


def _masked_seed_batch_norm(x: Tensor, P: Dict[str, Tensor], pre: str,
                            bn: nn.BatchNorm1d, mask: Tensor,
                            tracked: bool) -> Tensor:
    # Training BatchNorm per seed over the rows of `mask` [S, N], with the
    # count of real rows a tensor (static shapes): the statistics are
    # matrix products, as in `masked_batch_norm` (see its comment). The
    # moments are taken around a constant shift (the mean, detached): the
    # same values and gradients, and with `var` computed from `x - mean`
    # directly, torch 2.13's Inductor (CPU) fused the backward wrongly
    # (gradients of the earlier layers off by up to 100%; aot_eager and
    # Inductor without fusion right; tests/test_seed_batch.py).
    weight = mask.to(x.dtype).unsqueeze(1)  # [S, 1, N]
    count = weight.sum(2, keepdim=True)  # [S, 1, 1]
    with torch.no_grad():
        shift = torch.bmm(weight, x) / count
    shifted = x - shift
    offset = torch.bmm(weight, shifted) / count  # 0 up to rounding
    var = torch.bmm(weight, shifted.square()) / count - offset.square()
    mean = shift + offset
    centred = shifted - offset
    if tracked:
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1.0)
            P[pre + 'running_mean'].lerp_(mean.squeeze(1), bn.momentum)
            P[pre + 'running_var'].lerp_(unbiased.squeeze(1), bn.momentum)
    out = centred * torch.rsqrt(var + bn.eps)
    if bn.affine:
        out = torch.addcmul(P[pre + 'bias'].unsqueeze(1), out,
                            P[pre + 'weight'].unsqueeze(1))
    return out * weight.transpose(1, 2)  # padding rows 0


def sum_of_embeddings(encoder: nn.Module, P: Dict[str, Tensor], pre: str,
                      parts: Sequence[Tensor]) -> List[Tensor]:
    r"""OGB's atom or bond encoder (:class:`~pyg_hma.models.encoders.AtomEncoder`,
    ``BondEncoder``) of every seed: :obj:`parts` holds seed ``s``'s integer
    features ``[R_s, C]``, embedded with its own tables; returns the
    ``[R_s, d]`` of every seed. One ``embedding_bag`` per seed (summing the
    columns without the ``[R, C, d]`` lookup a sum would need): over the
    seeds' concatenated tables at once, the backward's accumulation into the
    table rounds as the group's size decides, and a seed's run would depend
    on its group."""
    columns = parts[0].size(-1)
    if parts[0].dim() != 2 or columns > len(encoder.embeddings):
        raise ValueError(
            f"{type(encoder).__name__} expected integer features with at "
            f"most {len(encoder.embeddings)} columns, got "
            f"{list(parts[0].shape)}")
    tables = [P[f'{pre}embeddings.{i}.weight'] for i in range(columns)]
    table = torch.cat(tables, dim=1)  # [S, V, d]
    starts = torch.from_numpy(np.cumsum(
        [0] + [t.size(1) for t in tables[:-1]])).to(parts[0].device)
    return [F.embedding_bag(index + starts, table[s], mode='sum')
            for s, index in enumerate(parts)]


def _node_encoding(gnn: GNN, P: Dict[str, Tensor], pre: str,
                   data: UnionBatch) -> Tensor:
    # The node encoder of every seed: [S, N, hidden].
    S, N = data.S, data.size
    x = data.x.view(S, N, -1)
    if gnn.atom_encoder:
        # Each seed's real rows (padding rows: feature 0 of every column).
        rows = (data.rows if isinstance(data.rows, list) else [N] * S)
        embedded = sum_of_embeddings(gnn.node_encoder, P,
                                     pre + 'node_encoder.',
                                     [x[s, :n] for s, n in enumerate(rows)])
        out = x.new_zeros((S, N, embedded[0].size(-1)),
                          dtype=embedded[0].dtype)
        for s, (n, part) in enumerate(zip(rows, embedded)):
            out[s, :n] = part
        return out
    if not x.is_floating_point():
        x = x.float()
    return linear(x, P[pre + 'node_encoder.weight'],
                  P[pre + 'node_encoder.bias'], data.rows)


def _virtual_node_update(gnn: GNN, P: Dict[str, Tensor], pre: str, i: int,
                         vn_in: Tensor, noise: Noise, training: bool
                         ) -> Tensor:
    # OGB's virtual-node MLP of layer i on [S, B, d] (Linear, BatchNorm,
    # ReLU, Linear, BatchNorm, ReLU, dropout), BatchNorm per seed.
    S, B, _ = vn_in.shape
    mlp, m = gnn.vn_mlps[i], f'{pre}vn_mlps.{i}.'
    rows = [B] * S
    z = linear(vn_in, P[m + '0.weight'], P[m + '0.bias'])
    z = F.relu(seed_batch_norm(z, P, m + '1.', mlp[1], rows,
                                 training))
    z = linear(z, P[m + '3.weight'], P[m + '3.bias'])
    z = F.relu(seed_batch_norm(z, P, m + '4.', mlp[4], rows,
                                 training))
    if training:
        z = noise.dropout(z, gnn.dropout)
    return z


def gnn_forward(gnn: GNN, P: Dict[str, Tensor], pre: str, data: UnionBatch,
                noise: Noise, training: bool) -> Tensor:
    r""":class:`~pyg_hma.models.gnn.GNN` of every seed on its own batch:
    returns pooled embeddings ``[S, B, hidden]``."""
    S, N, B = data.S, data.size, data.B
    h = _node_encoding(gnn, P, pre, data)
    d = h.size(-1)
    row, col = data.edge_index
    if gnn.uses_edge_attr:
        edge_parts = data.edge_attr.split(data.edge_counts)
    vn = None
    if gnn.virtual_node:
        vn = P[pre + 'vn_emb.weight'].expand(S, B, d)
    for i in range(gnn.num_layers):
        if vn is not None:
            # Each node receives its graph's virtual node (padding: zero).
            vn_rows = torch.cat([vn.reshape(S * B, d), vn.new_zeros(1, d)])
            h = h + vn_rows.index_select(0, data.batch).view(S, N, d)
        h_in = h
        c = f'{pre}convs.{i}.'
        edge_emb = None
        if gnn.uses_edge_attr:
            edge_emb = torch.cat(sum_of_embeddings(
                gnn.convs[i].edge_encoder, P, c + 'edge_encoder.',
                edge_parts))
        if gnn.conv == 'gcn':
            deg, norm = data.gcn_norm(h.dtype)
            z = linear(h, P[c + 'linear.weight'], P[c + 'linear.bias'],
                       data.rows)
            if edge_emb is None:  # relu(z[row]) is relu(z)[row]
                out = data.aggregate(F.relu(z).reshape(S * N, d), 'gcn')
            else:
                zf = z.reshape(S * N, d).index_select(0, row) + edge_emb
                msg = norm.view(-1, 1) * F.relu(zf)
                out = scatter(msg, col, 0, dim_size=S * N, reduce='sum')
            root = P[c + 'root_emb.weight']  # [S, 1, d]
            h = (out.view(S, N, d) + F.relu(add_rows(z, root, data.rows))
                 / deg.view(S, N, 1))
        else:
            if edge_emb is None:
                out = data.aggregate(F.relu(h).reshape(S * N, d), 'sum')
            else:
                hf = h.reshape(S * N, d).index_select(0, row) + edge_emb
                out = scatter(F.relu(hf), col, 0, dim_size=S * N,
                              reduce='sum')
            z = (scale_rows(h, 1 + P[c + 'eps'], data.rows)
                 + out.view(S, N, d))
            mlp = gnn.convs[i].mlp
            z = linear(z, P[c + 'mlp.0.weight'], P[c + 'mlp.0.bias'],
                       data.rows)
            z = seed_batch_norm(z, P, c + 'mlp.1.', mlp[1],
                                  data.rows, training)
            z = F.relu(z)
            h = linear(z, P[c + 'mlp.3.weight'], P[c + 'mlp.3.bias'],
                       data.rows)
        h = seed_batch_norm(h, P, f'{pre}norms.{i}.', gnn.norms[i],
                              data.rows, training)
        if i < gnn.num_layers - 1:
            h = F.relu(h)
        if training:
            h = noise.dropout(h, gnn.dropout, data.rows)
        if gnn.residual:
            h = h + h_in
        if vn is not None and i < gnn.num_layers - 1:
            # Message from the graph's nodes (this layer's input) to its
            # virtual node, as in OGB.
            pooled = scatter(h_in.reshape(S * N, d), data.batch, 0,
                             dim_size=S * B + 1, reduce='sum')
            vn_new = _virtual_node_update(
                gnn, P, pre, i, pooled[:S * B].view(S, B, d) + vn, noise,
                training)
            vn = vn + vn_new if gnn.residual else vn_new
    size = S * B
    pooled = POOLINGS[gnn.pooling](h.reshape(S * N, d), data.batch,
                                   size + 1)
    return pooled[:size].view(S, B, d)


def gmixup_gin_forward(gin: GMixupGIN, P: Dict[str, Tensor], pre: str,
                       data: UnionBatch, noise: Noise, training: bool
                       ) -> Tensor:
    r""":class:`~pyg_hma.models.tu_gin.GMixupGIN` of every seed on its own
    batch: returns embeddings ``[S, B, hidden]`` (after its ``Linear ->
    ReLU``). Each layer is PyG's ``GINConv`` (sum of the neighbours' rows,
    scattered as ``GINConv`` does, plus :math:`(1 + \epsilon)` times the
    node's own row, then ``Linear -> ReLU -> Linear``), ReLU, and a
    BatchNorm per seed over its real nodes; then mean pooling per graph."""
    S, N, B = data.S, data.size, data.B
    x = data.x
    if not x.is_floating_point():
        x = x.float()
    h = x.reshape(S, N, -1)
    for i in range(gin.num_layers):
        c = f'{pre}convs.{i}.'
        d = h.size(-1)
        out = data.aggregate(h.reshape(S * N, d), 'sum')
        z = out.view(S, N, d) + scale_rows(h, 1 + P[c + 'eps'], data.rows)
        z = F.relu(linear(z, P[c + 'nn.0.weight'], P[c + 'nn.0.bias'],
                          data.rows))
        z = linear(z, P[c + 'nn.2.weight'], P[c + 'nn.2.bias'],
                   data.rows)
        h = seed_batch_norm(F.relu(z), P, f'{pre}norms.{i}.',
                              gin.norms[i], data.rows, training)
    d = h.size(-1)
    size = S * B
    pooled = POOLINGS['mean'](h.reshape(S * N, d), data.batch, size + 1)
    pooled = pooled[:size].view(S, B, d)
    return F.relu(linear(pooled, P[pre + 'lin.weight'], P[pre + 'lin.bias']))


def mlp_forward(mlp: IRMMLP, P: Dict[str, Tensor], pre: str,
                data: ImageUnion, noise: Noise, training: bool) -> Tensor:
    r""":class:`~pyg_hma.models.mnist.IRMMLP` of every seed on its own
    images: ``[S, B, hidden]``."""
    x = data.x.flatten(2).to(P[pre + 'lin1.weight'].dtype)
    x = F.relu(linear(x, P[pre + 'lin1.weight'], P[pre + 'lin1.bias']))
    return F.relu(linear(x, P[pre + 'lin2.weight'], P[pre + 'lin2.bias']))


def cnn_forward(cnn: SmallCNN, P: Dict[str, Tensor], pre: str,
                data: ImageUnion, noise: Noise, training: bool) -> Tensor:
    r""":class:`~pyg_hma.models.mnist.SmallCNN` of every seed on its own
    images: ``[S, B, channels]``. The seeds are channel groups of one batch
    ``[B, S * C, H, W]``: every convolution is one grouped convolution
    (``groups=S``, seed ``s``'s filters on its own channels), and one
    BatchNorm over the ``S * C`` channels is every seed's BatchNorm (images
    need no padding)."""
    S, B = data.S, data.B
    x = data.x.to(P[pre + 'net.0.weight'].dtype)
    x = x.transpose(0, 1).reshape(B, S * x.size(2), *x.shape[3:])
    for i, module in enumerate(cnn.net):
        m = f'{pre}net.{i}.'
        if isinstance(module, nn.Conv2d):
            w = P[m + 'weight']
            x = F.conv2d(x, w.reshape(-1, *w.shape[2:]),
                         P[m + 'bias'].reshape(-1), module.stride,
                         module.padding, module.dilation, groups=S)
        elif isinstance(module, nn.BatchNorm2d):
            tracked = module.track_running_stats
            if training and tracked:
                P[m + 'num_batches_tracked'].add_(1)
            x = F.batch_norm(
                x, P[m + 'running_mean'].view(-1) if tracked else None,
                P[m + 'running_var'].view(-1) if tracked else None,
                P[m + 'weight'].reshape(-1), P[m + 'bias'].reshape(-1),
                training or not tracked, module.momentum or 0.0,
                module.eps)
        elif isinstance(module, nn.ReLU):
            x = F.relu(x)
        elif isinstance(module, nn.MaxPool2d):
            x = F.max_pool2d(x, module.kernel_size, module.stride,
                             module.padding, module.dilation,
                             ceil_mode=module.ceil_mode)
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            x = F.adaptive_avg_pool2d(x, module.output_size)
        elif isinstance(module, nn.Flatten):
            x = x.reshape(B, S, -1).transpose(0, 1)  # [S, B, d]
        else:
            raise NotImplementedError(
                f'seed batching: {type(module).__name__} in SmallCNN')
    return x


#: The encoders :class:`StackedModel` can batch, with their stacked forward
#: ``(encoder, P, prefix, data, noise, training) -> [S, B, d]``.
ENCODERS = {GNN: gnn_forward, GMixupGIN: gmixup_gin_forward,
            IRMMLP: mlp_forward, SmallCNN: cnn_forward}


def encoder_forward(encoder: nn.Module, P: Dict[str, Tensor], pre: str,
                    data: UnionBatch, noise: Noise, training: bool) -> Tensor:
    r"""The stacked forward of :obj:`encoder`'s type (see
    :data:`ENCODERS`): pooled embeddings ``[S, B, d]``."""
    return ENCODERS[type(encoder)](encoder, P, pre, data, noise, training)


def attention_block(block, P: Dict[str, Tensor], pre: str, tokens: Tensor,
                    num_queries: int, mask: Optional[Tensor], noise: Noise,
                    training: bool) -> Tensor:
    r""":class:`~pyg_hma.nn.utils.MaskedAttentionBlock` per seed:
    :obj:`tokens` ``[S, T, D]``, :obj:`mask` ``[S, Q, T]``."""
    S, T, D = tokens.shape
    Q, H = num_queries, block.heads
    query = tokens[:, :Q]
    eps = block.norm1.eps
    h = layer_norm(tokens, P[pre + 'norm1.weight'], P[pre + 'norm1.bias'],
                   eps)
    q = linear(h[:, :Q], P[pre + 'q_proj.weight'], P[pre + 'q_proj.bias'])
    q = q.view(S, Q, H, -1)
    kv = linear(h, P[pre + 'kv_proj.weight'], P[pre + 'kv_proj.bias'])
    poisoned = None
    if mask is not None:
        bad = nonfinite_rows(kv)  # [S, T], as MaskedAttentionBlock
        kv = kv.nan_to_num(0.0, 0.0, 0.0)
        poisoned = (mask & bad[:, None, :]).any(dim=2)  # [S, Q]
    k, v = kv.view(S, T, 2, H, -1).unbind(dim=2)
    attn_mask = None if mask is None else mask.view(S, 1, Q, T)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=attn_mask)
    out = out.transpose(1, 2).reshape(S, Q, D)
    if poisoned is not None:
        out = torch.where(poisoned[..., None], out.new_full((), np.nan), out)
    out = linear(out, P[pre + 'out_proj.weight'], P[pre + 'out_proj.bias'])
    if training:
        out = noise.dropout(out, block.dropout)
    z = query + out
    f = layer_norm(z, P[pre + 'norm2.weight'], P[pre + 'norm2.bias'],
                   block.norm2.eps)
    f = F.gelu(linear(f, P[pre + 'ffn.0.weight'], P[pre + 'ffn.0.bias']))
    f = linear(f, P[pre + 'ffn.2.weight'], P[pre + 'ffn.2.bias'])
    if training:
        f = noise.dropout(f, block.dropout)
    return z + f


def _embed(table: Tensor, index: Tensor) -> Tensor:
    # Per-seed lookup: table [S, V, l], index [S, R] -> [S, R, l].
    S, V, _ = table.shape
    offset = torch.arange(S, device=index.device).view(S, 1) * V
    return F.embedding(index + offset, table.reshape(S * V, -1))


def readout_forward(ro: HMAReadout, P: Dict[str, Tensor], pre: str,
                    x: Tensor, y: Optional[Tensor], key: Optional[Tensor],
                    noise: Noise, training: bool) -> Tensor:
    r""":class:`~pyg_hma.HMAReadout` per seed: :obj:`x` ``[S, B, d]``,
    :obj:`y` ``[S, B]`` (written into each seed's queue in training)."""
    S, B, d = x.shape
    C = ro.num_classes
    emb = P[pre + 'label_emb.weight']  # [S, C + 1, l]
    unknown = emb[:, C]
    z = torch.cat([x, unknown.unsqueeze(1).expand(S, B, -1)], dim=-1)
    eye = torch.eye(B, dtype=torch.bool, device=x.device).expand(S, B, B)
    if ro.rma_block is not None:
        labels = P[pre + 'queue_labels']  # [S, M]
        memory = torch.cat([P[pre + 'queue_keys'],
                            _embed(emb, labels.clamp(min=0))], dim=-1)
        filled = (labels >= 0).unsqueeze(1).expand(S, B, -1)
        mask = torch.cat([eye, filled], dim=2)
        z = attention_block(ro.rma_block, P, pre + 'rma_block.',
                            torch.cat([z, memory], dim=1), B, mask, noise,
                            training)
    if ro.sma_block is not None:
        tokens = [z]
        if ro.slots is not None:
            slots = P[pre + 'slots'].reshape(S, -1, ro.in_channels)
            slot_labels = ro.slot_labels.to(x.device).expand(S, -1)
            tokens.append(torch.cat([slots, _embed(emb, slot_labels)],
                                    dim=-1))
        across = ro.abd and (training or ro.inference == 'batch')
        mask = None
        if not across:
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
def write_queues(ro: HMAReadout, P: Dict[str, Tensor], pre: str,
                 keys: Tensor, labels: Tensor):
    r""":meth:`HMAReadout.write <pyg_hma.HMAReadout.write>` for every seed:
    :obj:`keys` ``[S, B, d]``, :obj:`labels` ``[S, B]``."""
    size = ro.memory_size
    if size == 0:
        return
    qk, ql, ptr = (P[pre + 'queue_keys'], P[pre + 'queue_labels'],
                   P[pre + 'queue_ptr'])
    S, B, d = keys.shape
    keys = keys.to(qk.dtype)
    labels = labels.reshape(S, B).long()
    valid = (torch.isfinite(keys).all(dim=2) & (labels >= 0)
             & (labels < ro.num_classes))
    count = valid.sum(dim=1)  # [S]
    pos = valid.cumsum(1) - 1
    kept = valid & (pos >= (count - size).unsqueeze(1))
    index = torch.where(kept, (ptr.unsqueeze(1) + pos) % size,
                        torch.full_like(pos, size))
    index = (index + torch.arange(S, device=index.device).view(S, 1)
             * (size + 1)).view(-1)
    spare_keys = torch.cat([qk, qk.new_zeros(S, 1, d)], dim=1).view(-1, d)
    spare_keys.index_copy_(0, index, torch.where(
        kept[..., None], keys, keys.new_zeros(())).view(-1, d))
    spare_labels = torch.cat([ql, ql.new_full((S, 1), -1)], dim=1).view(-1)
    spare_labels.index_copy_(0, index, labels.reshape(-1))
    qk.copy_(spare_keys.view(S, size + 1, d)[:, :size])
    ql.copy_(spare_labels.view(S, size + 1)[:, :size])
    ptr.copy_((ptr + count) % size)


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
            self._momentum = (
                mom.momentum,
                [self.tensors['momentum_encoder.module.' + n] for n in online],
                [self.tensors['encoder.' + n] for n in online],
                [(self.tensors['momentum_encoder.module.' + n],
                  self.tensors['encoder.' + n])
                 for n, _ in template.encoder.named_buffers()
                 if 'encoder.' + n in self.tensors])

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
            momentum, k_params, q_params, buffers = self._momentum
            with torch.no_grad():
                torch._foreach_lerp_(k_params, [p.detach() for p in q_params],
                                     1.0 - momentum)
                for k_buf, q_buf in buffers:
                    k_buf.copy_(q_buf)
                key = self._encoder_forward(
                    m.momentum_encoder.module, P, 'momentum_encoder.module.',
                    data, noise, training)
        return self._readout_forward(m.readout, P, 'readout.', h, y, key,
                                     noise, training)
