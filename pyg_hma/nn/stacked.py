r"""Functional layers with a leading *seed* dimension: the one definition of
the math of every module of this project that trains.

Every tensor carries a leading seed dimension ``S`` and every parameter
``P[name]`` is ``[S, ...]``: the seed-batched trainer
(:mod:`pyg_hma.train.stacked`) stacks S models' parameters, and a module's
own ``forward`` runs the same functions on its parameters viewed as a group
of one (:func:`stacked_state`, ``S = 1``) with torch's global random stream
(:data:`GLOBAL_NOISE`). So a layer's forward is written once.

Here: per-seed linear maps (:func:`linear`), row-restricted additions and
scales, layer norm, BatchNorm per seed over its real rows
(:func:`seed_batch_norm`), OGB's embedding encoders
(:func:`sum_of_embeddings`) and the random streams (:class:`Noise`,
:func:`hash32`, :class:`GlobalNoise`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def stacked_state(module: nn.Module, prefix: str = '') -> Dict[str, Tensor]:
    r"""Every parameter and buffer of :obj:`module` (non-persistent buffers
    included) as a group of one seed: ``{prefix + name: t.unsqueeze(0)}``.
    The views share storage and autograd history with the module's own
    tensors, so gradients reach its parameters and in-place updates (BatchNorm
    statistics, HMA's queue) its buffers."""
    state = {}
    for name, owner in module.named_modules(remove_duplicate=False):
        pre = prefix + name + '.' if name else prefix
        for tensors in (owner._parameters, owner._buffers):
            for key, t in tensors.items():
                if t is not None:
                    state[pre + key] = t.unsqueeze(0)
    return state


# --------------------------------------------------------------------------
# Functional layers with a leading seed dimension
# --------------------------------------------------------------------------

def _bmm_linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    if w.size(1) == 1 and x.size(0) > 1:
        # One output column (a BCE head): a batched GEMM of S > 1 takes
        # another kernel than a seed's own, a matrix-vector product, and
        # rounds otherwise (torch 2.13, MKL, CPU); so every seed runs its
        # own, and its logits do not depend on its group.
        return torch.cat([_bmm_linear(x[s:s + 1], w[s:s + 1],
                                      None if b is None else b[s:s + 1])
                          for s in range(x.size(0))])
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _over_rows(a: Tensor, b: Tensor, rows) -> Tensor:
    # Every seed's a_s^T b_s over its own real rows only, [S, p, q] from a
    # [S, N, p] and b [S, N, q]: one GEMM per seed with K = n_s, the very
    # call the seed makes alone. (Over the group's padded N, K = N_max: the
    # padding rows add zeros, but MKL's sgemm blocks some K otherwise, e.g.
    # n_s in 160-376 padded by 40 rounds differently, torch 2.13 on this
    # CPU.)
    if rows is None or (len(rows) == 1 and rows[0] == a.size(1)):
        return torch.bmm(a.transpose(1, 2), b)
    out = a.new_empty(a.size(0), a.size(2), b.size(2))
    for s, n in enumerate(rows):
        torch.bmm(a[s:s + 1, :n].transpose(1, 2), b[s:s + 1, :n],
                  out=out[s:s + 1])
    return out


def _row_sums(grad: Tensor, rows) -> Tensor:
    # Every seed's sum over its real rows, [S, 1, d], as a GEMM with a row
    # of ones (in-order accumulation), per seed over its own rows as in
    # _over_rows. Not _over_rows of a column of ones: its transposed view
    # takes another kernel for some sizes, and the sums would change.
    if rows is None or (len(rows) == 1 and rows[0] == grad.size(1)):
        return torch.bmm(grad.new_ones(grad.size(0), 1, grad.size(1)), grad)
    out = grad.new_empty(grad.size(0), 1, grad.size(2))
    for s, n in enumerate(rows):
        torch.bmm(grad.new_ones(1, 1, n), grad[s:s + 1, :n],
                  out=out[s:s + 1])
    return out


class _RowsLinear(torch.autograd.Function):
    # The batched linear layer, with the gradients of the weight and bias
    # reduced over each seed's real rows alone (_over_rows), not over the
    # group's padded N.
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Optional[Tensor],
                rows: List[int]) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        ctx.rows = rows
        return _bmm_linear(x, w, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        grad_x = torch.bmm(grad, w) if need_x else None
        grad_w = grad_b = None
        if need_w:
            grad_w = _over_rows(grad, x, ctx.rows)
        if need_b and ctx.has_bias:
            grad_b = _row_sums(grad, ctx.rows).squeeze(1)
        return grad_x, grad_w, grad_b, None


def linear(x: Tensor, w: Tensor, b: Optional[Tensor],
           rows=None) -> Tensor:
    r""":math:`x_s W_s^T + b_s` for :obj:`x` ``[S, N, in]``, :obj:`w`
    ``[S, out, in]``, :obj:`b` ``[S, out]``.

    Node features (padded rows): give :obj:`rows` (the real rows per seed,
    a list), and the gradients of :obj:`w` and :obj:`b` are one GEMM per
    seed over its own real rows (for :obj:`b` with a row of ones), the
    calls the seed makes alone, rather than one over the group's padded
    ``N``: autograd's sum over ``[S, N, out]`` takes another summation order
    than a seed's ``[1, n, out]``, and even a GEMM whose padding rows add
    zeros blocks some ``N`` otherwise, so the seed's float32 run would
    depend on its group (``tests/test_invariance.py`` holds both to the
    last bit)."""
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
    ``[N * d]`` rounds differently with ``N`` (``tests/test_invariance.py``)."""
    if isinstance(rows, Tensor) or not scale.requires_grad:
        return x * scale.view(-1, 1, 1)
    return _ScaleRows.apply(x, scale, list(rows))


class _AddRows(torch.autograd.Function):
    # x [S, N, d] plus one row per seed [S, 1, d]; the row's gradient an
    # in-order GEMM (_row_sums), not autograd's sum over the padded N.
    @staticmethod
    def forward(ctx, x: Tensor, row: Tensor, rows: List[int]) -> Tensor:
        ctx.rows = rows
        return x + row

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_row = None
        if ctx.needs_input_grad[1]:
            grad_row = _row_sums(grad, ctx.rows)
        return grad, grad_row, None


def add_rows(x: Tensor, row: Tensor, rows) -> Tensor:
    r""":math:`x_s + r_s` for :obj:`x` ``[S, N, d]`` and one row per seed
    :obj:`row` ``[S, 1, d]`` (GCN's root embedding). With :obj:`rows` a list
    (padded node rows), the row's gradient is an in-order GEMM, as the bias
    of :func:`linear`."""
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
    if type(bn) is not nn.BatchNorm1d and S == 1 and rows == [N]:
        # A module's own forward with a BatchNorm of another kind (one whose
        # statistics span every torch.distributed rank, say): that layer's
        # forward, on all of its rows.
        return bn(x.view(N, C)).view(1, N, C)
    if not training:
        mean = P[pre + 'running_mean'].unsqueeze(1)
        var = P[pre + 'running_var'].unsqueeze(1)
        out = (x - mean) * torch.rsqrt(var + bn.eps)
        if bn.affine:
            out = torch.addcmul(P[pre + 'bias'].unsqueeze(1), out,
                                P[pre + 'weight'].unsqueeze(1))
        return out
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
        momentum = 0.0
        if tracked:  # momentum=None: the cumulative average
            momentum = (bn.momentum if bn.momentum is not None else
                        1.0 / float(P[pre + 'num_batches_tracked'][s]))
        pieces.append(F.batch_norm(
            parts[2 * s], P[pre + 'running_mean'][s] if tracked else None,
            P[pre + 'running_var'][s] if tracked else None,
            affine[0][s], affine[1][s], True, momentum, bn.eps))
        if n < N:
            pieces.append(x.new_zeros(N - n, C))
    return torch.cat(pieces).view(S, N, C)


def _masked_seed_batch_norm(x: Tensor, P: Dict[str, Tensor], pre: str,
                            bn: nn.BatchNorm1d, mask: Tensor,
                            tracked: bool) -> Tensor:
    # Training BatchNorm per seed over the rows of `mask` [S, N], with the
    # count of real rows a tensor (static shapes): the statistics are
    # matrix products (see the comment below). The
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
            momentum = bn.momentum
            if momentum is None:  # the cumulative average
                momentum = (1.0 / P[pre + 'num_batches_tracked']).to(
                    x.dtype).view(-1, 1)
            P[pre + 'running_mean'].lerp_(mean.squeeze(1), momentum)
            P[pre + 'running_var'].lerp_(unbiased.squeeze(1), momentum)
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


class GlobalNoise:
    r"""The random stream of a module run on its own (``S = 1``): torch's
    global generator, as :func:`torch.nn.functional.dropout` draws it."""
    static = False

    def new_step(self):
        pass

    def dropout(self, x: Tensor, p: float, rows=None) -> Tensor:
        return F.dropout(x, p, training=True)

    def randint(self, high: int, size: int, device) -> Tensor:
        return torch.randint(0, high, (size, ), device=device).unsqueeze(0)


#: The one :class:`GlobalNoise` every module's own forward uses.
GLOBAL_NOISE = GlobalNoise()

__all__ = ['stacked_state', 'linear', 'scale_rows', 'add_rows', 'layer_norm',
           'hash32', 'Noise', 'GlobalNoise', 'GLOBAL_NOISE', 'seed_batch_norm',
           'sum_of_embeddings']
