r"""The functional layers of seed-batched training, with a leading seed
dimension (:mod:`pyg_hma.train.stacked` explains the layout): the union of
the S batches of a step (:class:`UnionBatch`, :class:`ImageUnion`),
per-seed linear maps (:func:`linear`), row-restricted additions and scales,
layer norm, BatchNorm per seed over its real rows (:func:`seed_batch_norm`),
OGB's embedding encoders (:func:`sum_of_embeddings`) and the per-seed random
streams (:class:`Noise`, :func:`hash32`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.gnn import gcn_norm, neighbour_sum

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


def _row_sums(grad: Tensor) -> Tensor:
    # Every seed's sum over its rows, [S, 1, d], as a batched GEMM with a
    # row of ones: it accumulates the rows in order, so the padding rows
    # (zero gradients) add exact zeros.
    ones = grad.new_ones(grad.size(0), 1, grad.size(1))
    return torch.bmm(ones, grad)


class _RowsLinear(torch.autograd.Function):
    # The batched linear layer, with the bias's gradient an in-order GEMM
    # (_row_sums), not autograd's sum over the padded N.
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _bmm_linear(x, w, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = torch.bmm(grad, w) if need_x else None
        grad_w = grad_b = None
        if need_w:
            grad_w = torch.bmm(grad.transpose(1, 2), x)
        if need_b and ctx.has_bias:
            grad_b = _row_sums(grad).squeeze(1)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, w: Tensor, b: Optional[Tensor],
           rows=None) -> Tensor:
    r""":math:`x_s W_s^T + b_s` for :obj:`x` ``[S, N, in]``, :obj:`w`
    ``[S, out, in]``, :obj:`b` ``[S, out]``.

    Node features (padded rows): give :obj:`rows` (the real rows per seed,
    a list), and the gradient of :obj:`b` is a batched GEMM with a row of
    ones rather than autograd's sum over the padded ``N``: that sum of
    ``[S, N, out]`` takes another summation order than a seed's
    ``[1, n, out]`` alone, so its float32 rounding, and the seed's run,
    would depend on the group. A GEMM accumulates the rows in order and the
    padding rows add exact zeros, as for the weight's gradient
    (``tests/test_invariance.py`` holds both to the last bit)."""
    if rows is None or isinstance(rows, Tensor) or not (
            torch.is_grad_enabled() and w.requires_grad):
        return _bmm_linear(x, w, b)
    return _RowsLinear.apply(x, w, b)


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
    ``[N * d]`` rounds differently with ``N`` (``tests/test_invariance.py``)."""
    if isinstance(rows, Tensor) or not scale.requires_grad:
        return x * scale.view(-1, 1, 1)
    return _ScaleRows.apply(x, scale, list(rows))


class _AddRows(torch.autograd.Function):
    # x [S, N, d] plus one row per seed [S, 1, d]; the row's gradient an
    # in-order GEMM (_row_sums), not autograd's sum over the padded N.
    @staticmethod
    def forward(ctx, x: Tensor, row: Tensor) -> Tensor:
        return x + row

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_row = None
        if ctx.needs_input_grad[1]:
            grad_row = _row_sums(grad)
        return grad, grad_row


def add_rows(x: Tensor, row: Tensor, rows) -> Tensor:
    r""":math:`x_s + r_s` for :obj:`x` ``[S, N, d]`` and one row per seed
    :obj:`row` ``[S, 1, d]`` (GCN's root embedding). With :obj:`rows` a list
    (padded node rows), the row's gradient is an in-order GEMM, as the bias
    of :func:`linear`."""
    if isinstance(rows, Tensor) or not row.requires_grad:
        return x + row
    return _AddRows.apply(x, row)


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


__all__ = ['UnionBatch', 'ImageUnion', 'union_of', 'linear', 'scale_rows',
           'add_rows', 'layer_norm', 'hash32', 'Noise', 'seed_batch_norm',
           'sum_of_embeddings']
