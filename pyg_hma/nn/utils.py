"""Small building blocks shared by the HMA layers."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .stacked import GLOBAL_NOISE, layer_norm, linear, stacked_state

_ATTENTION_SCALES = ('head', 'token')
_RESIDUALS = ('identity', 'linear')
_BLOCK_DEFAULTS = dict(ffn_ratio=2, attention_scale='head',
                       residual='identity', out_proj=True,
                       ffn_hidden_dropout=False, separate_kv_norm=False,
                       norm_eps=1e-5)


class MaskedAttentionBlock(nn.Module):
    r"""One pre-LayerNorm transformer block in which the first
    :obj:`num_queries` tokens attend over all tokens under a boolean mask:

    .. math::
        \mathbf{z} &= \mathrm{R}(\mathbf{q}) + \mathrm{Drop}\big(
        \mathrm{O}\big(\mathrm{MHA}(\mathrm{LN}_1(\mathbf{q}),
        \mathrm{LN}_{kv}(\mathbf{T}), \mathrm{LN}_{kv}(\mathbf{T});
        \mathbf{A})\big)\big) \\
        \mathbf{z}' &= \mathbf{z} + \mathrm{Drop}\big(\mathrm{FFN}(
        \mathrm{LN}_2(\mathbf{z}))\big)

    where :math:`\mathbf{T}` are all tokens, :math:`\mathbf{q}` its first
    :obj:`num_queries` rows and :math:`\mathbf{A}` the mask (:obj:`True` =
    may attend). By default the residual :math:`\mathrm{R}` is the identity,
    :math:`\mathrm{O}` a linear output projection,
    :math:`\mathrm{LN}_{kv} = \mathrm{LN}_1` and the attention scores are
    :math:`\mathbf{q}_h^\top \mathbf{k}_h / \sqrt{D / H}` (head width). Keys
    and values are projected once for all tokens and the attention runs
    through :func:`torch.nn.functional.scaled_dot_product_attention`.

    The options after :obj:`ffn_ratio` exist to reproduce the block of the
    released HMA code (``MAB`` in ``models/HMA/MAB_modules.py`` of
    qiuzh20/HMA, see ``docs/hma.md``); their defaults give this project's
    block.

    Args:
        channels (int): token size :math:`D`.
        heads (int): number of attention heads :math:`H` (must divide
            :obj:`channels`).
        dropout (float): dropout on both residual branches. The attention
            weights themselves are not dropped: over a few hundred memory
            tokens that mask costs more than the rest of the block on CPU.
        ffn_ratio (int): hidden size of the feed-forward network relative to
            :obj:`channels`. (default: :obj:`2`)
        attention_scale (str, optional): :obj:`"head"` divides the scores by
            :math:`\sqrt{D / H}`, :obj:`"token"` by :math:`\sqrt{D}` (the
            released code). (default: :obj:`"head"`)
        residual (str, optional): :obj:`"identity"` adds the query token
            itself, :obj:`"linear"` a learned linear map of it (the released
            code's ``fc_res``). (default: :obj:`"identity"`)
        out_proj (bool, optional): project the concatenated heads with a
            linear layer; the released code has none. (default: :obj:`True`)
        ffn_hidden_dropout (bool, optional): also apply dropout after the
            feed-forward activation, as the released code does.
            (default: :obj:`False`)
        separate_kv_norm (bool, optional): normalise the keys/values with a
            LayerNorm of their own instead of the queries' one.
            (default: :obj:`False`)
        norm_eps (float, optional): :math:`\epsilon` of every LayerNorm.
            (default: :obj:`1e-5`)

    With a mask, a NaN or Inf token reaches only the queries allowed to
    attend to it (without the guard, ``0 * NaN`` in the masked attention
    would make every query's output NaN).

    Shapes:
        - **input:** tokens :math:`(N, D)`, mask :math:`(Q, N)` or
          :obj:`None` (every query attends to every token)
        - **output:** :math:`(Q, D)`
    """
    def __init__(self, channels: int, heads: int, dropout: float = 0.0,
                 ffn_ratio: int = 2, *, attention_scale: str = 'head',
                 residual: str = 'identity', out_proj: bool = True,
                 ffn_hidden_dropout: bool = False,
                 separate_kv_norm: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"Token size {channels} must be divisible by "
                             f"heads={heads}")
        if attention_scale not in _ATTENTION_SCALES:
            raise ValueError(f"attention_scale must be one of "
                             f"{_ATTENTION_SCALES} (got '{attention_scale}')")
        if residual not in _RESIDUALS:
            raise ValueError(f"residual must be one of {_RESIDUALS} (got "
                             f"'{residual}')")
        if ffn_ratio < 1:
            raise ValueError(f"ffn_ratio must be >= 1 (got {ffn_ratio})")
        self.channels = channels
        self.heads = heads
        self.dropout = dropout
        self.ffn_ratio = ffn_ratio
        self.attention_scale = attention_scale
        self.residual = residual
        self.ffn_hidden_dropout = ffn_hidden_dropout
        self.separate_kv_norm = separate_kv_norm
        self.norm_eps = norm_eps
        # Submodules that only some options need are created only then, so
        # the default block keeps its state_dict keys.
        self.norm1 = nn.LayerNorm(channels, eps=norm_eps)
        self.norm_kv = (nn.LayerNorm(channels, eps=norm_eps)
                        if separate_kv_norm else None)
        self.q_proj = nn.Linear(channels, channels)
        self.kv_proj = nn.Linear(channels, 2 * channels)
        self.out_proj = nn.Linear(channels, channels) if out_proj else None
        self.res_proj = (nn.Linear(channels, channels)
                         if residual == 'linear' else None)
        self.norm2 = nn.LayerNorm(channels, eps=norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(channels, ffn_ratio * channels),
            nn.GELU(),
            nn.Linear(ffn_ratio * channels, channels),
        )
        self.reset_parameters()

    def reset_parameters(self):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()

    def forward(self, tokens: Tensor, num_queries: int,
                mask: Optional[Tensor] = None) -> Tensor:
        # The block's one definition, on its weights as a group of one.
        return attention_block(
            self, stacked_state(self), '', tokens.unsqueeze(0), num_queries,
            None if mask is None else mask.unsqueeze(0), GLOBAL_NOISE,
            self.training).squeeze(0)

    def extra_options(self) -> Dict[str, Any]:
        r"""The options that differ from their defaults, by name."""
        current = dict(ffn_ratio=self.ffn_ratio,
                       attention_scale=self.attention_scale,
                       residual=self.residual,
                       out_proj=self.out_proj is not None,
                       ffn_hidden_dropout=self.ffn_hidden_dropout,
                       separate_kv_norm=self.separate_kv_norm,
                       norm_eps=self.norm_eps)
        return {k: v for k, v in current.items() if v != _BLOCK_DEFAULTS[k]}

    def __repr__(self) -> str:
        extra = ''.join(f', {k}={v!r}'
                        for k, v in self.extra_options().items())
        return (f'{self.__class__.__name__}({self.channels}, '
                f'heads={self.heads}, dropout={self.dropout}{extra})')


def attention_block(block: MaskedAttentionBlock, P: Dict[str, Tensor],
                    pre: str, tokens: Tensor, num_queries: int,
                    mask: Optional[Tensor], noise, training: bool) -> Tensor:
    r"""The math of :class:`MaskedAttentionBlock` :obj:`block` (its options
    read from it), on weights ``P[pre + name]`` with a leading seed
    dimension (:mod:`pyg_hma.nn.stacked`): :obj:`tokens` ``[S, T, D]``,
    :obj:`mask` ``[S, Q, T]`` or ``None``, dropout from :obj:`noise`;
    returns ``[S, Q, D]``. The block's own forward is this with ``S = 1``."""
    S, T, D = tokens.shape
    Q, H = num_queries, block.heads
    query = tokens[:, :Q]
    h = layer_norm(tokens, P[pre + 'norm1.weight'], P[pre + 'norm1.bias'],
                   block.norm_eps)
    # [S, heads, T, D/heads]: the seed is the batch, its tokens the sequence.
    q = linear(h[:, :Q], P[pre + 'q_proj.weight'], P[pre + 'q_proj.bias'])
    q = q.view(S, Q, H, -1)
    if block.norm_kv is not None:
        h = layer_norm(tokens, P[pre + 'norm_kv.weight'],
                       P[pre + 'norm_kv.bias'], block.norm_eps)
    kv = linear(h, P[pre + 'kv_proj.weight'], P[pre + 'kv_proj.bias'])
    poisoned = None
    if mask is not None:
        # A masked-out token must not reach a query, but a NaN key or value
        # would (NaN score, or 0 * NaN = NaN in the weighted sum). Zero the
        # non-finite entries, then give NaN to exactly the queries that may
        # attend to a bad token, as unmasked attention would. (Zeroing the
        # entries rather than the whole row gives the same outputs and
        # gradients: a bad row only reaches masked-out queries, weight 0,
        # and poisoned ones, whose output is replaced and passes no
        # gradient back.)
        bad = nonfinite_rows(kv)  # [S, T]
        kv = kv.nan_to_num(0.0, 0.0, 0.0)
        poisoned = (mask & bad[:, None, :]).any(dim=2)  # [S, Q]
    k, v = kv.view(S, T, 2, H, -1).unbind(dim=2)
    attn_mask = None if mask is None else mask.view(S, 1, Q, T)
    # scale=None is SDPA's own 1 / sqrt(head width).
    scale = (1.0 / math.sqrt(block.channels)
             if block.attention_scale == 'token' else None)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=attn_mask, scale=scale)
    out = out.transpose(1, 2).reshape(S, Q, D)
    if poisoned is not None:
        out = torch.where(poisoned[..., None], out.new_full((), math.nan),
                          out)
    if block.out_proj is not None:
        out = linear(out, P[pre + 'out_proj.weight'],
                     P[pre + 'out_proj.bias'])
    if training:
        out = noise.dropout(out, block.dropout)
    res = query if block.res_proj is None else linear(
        query, P[pre + 'res_proj.weight'], P[pre + 'res_proj.bias'])
    z = res + out
    f = layer_norm(z, P[pre + 'norm2.weight'], P[pre + 'norm2.bias'],
                   block.norm_eps)
    f = F.gelu(linear(f, P[pre + 'ffn.0.weight'], P[pre + 'ffn.0.bias']))
    if training and block.ffn_hidden_dropout:
        f = noise.dropout(f, block.dropout)
    f = linear(f, P[pre + 'ffn.2.weight'], P[pre + 'ffn.2.bias'])
    if training:
        f = noise.dropout(f, block.dropout)
    return z + f


def nonfinite_rows(x: Tensor) -> Tensor:
    r"""``~isfinite(x).all(dim=-1)``: whether each row (the last dimension)
    holds a NaN or an infinity, computed as the NaN test of the row sums of
    ``0 * x`` (0 for a finite entry, NaN otherwise), several times cheaper on
    a CPU."""
    return torch.isnan((x * 0).sum(dim=-1))


def gather_from_all_ranks(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """Concatenates :obj:`tensors` (same first dimension) from every
    :mod:`torch.distributed` rank in rank order, as MoCo does before writing
    its queue, so that every rank writes the same rows. Ranks may hold
    different numbers of rows (a last partial batch). Without an initialised
    process group of more than one rank the inputs are returned unchanged."""
    if not (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1):
        return tensors
    world = dist.get_world_size()
    device = tensors[0].device
    size = torch.tensor([tensors[0].size(0)], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    max_size = max(sizes)
    out = []
    for tensor in tensors:
        padded = tensor.new_zeros((max_size, ) + tensor.shape[1:])
        padded[:tensor.size(0)] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        out.append(torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0))
    return tuple(out)


def distributed_world_size() -> int:
    r"""The number of :mod:`torch.distributed` ranks (1 without an
    initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _AllGatherWithGrad(torch.autograd.Function):
    # Forward: every rank's (equally shaped) tensor, stacked in rank order.
    # Backward: each rank's gradient of the stack summed over the ranks, and
    # this rank's part of it returned: the gradient of a loss summed over
    # the ranks. (torch.distributed.nn.functional.all_gather does the same
    # but is deprecated; this one needs only all_gather and all_reduce,
    # which every backend has.)
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    r"""Every rank's :obj:`tensor` (the same shape on all ranks), stacked in
    rank order: :math:`(W, *)`. Differentiable: the backward pass gives each
    rank the gradient, summed over the ranks, of its own part, so a loss
    summed over the ranks differentiates as if all parts lived in one
    process. Without a process group of more than one rank:
    ``tensor.unsqueeze(0)``."""
    if distributed_world_size() == 1:
        return tensor.unsqueeze(0)
    return _AllGatherWithGrad.apply(tensor)


def gather_rows_with_grad(rows: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Every rank's :obj:`rows` (ranks may hold different numbers), with
    gradients (see :func:`all_gather_with_grad`): returns ``(own, others)``
    where :obj:`own` is :obj:`rows` itself and :obj:`others` the other
    ranks' rows in rank order. Without an initialised process group of more
    than one rank :obj:`others` is empty."""
    if distributed_world_size() == 1:
        return rows, rows[:0]
    rank, world = dist.get_rank(), dist.get_world_size()
    size = torch.tensor([rows.size(0)], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    padded = F.pad(rows, (0, 0) * (rows.dim() - 1)
                   + (0, max(sizes) - rows.size(0)))
    parts = all_gather_with_grad(padded)
    others = [part[:n] for r, (part, n) in enumerate(zip(parts, sizes))
              if r != rank]
    return rows, torch.cat(others, dim=0)
