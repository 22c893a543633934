"""Small building blocks shared by the HMA layers."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedAttentionBlock(nn.Module):
    r"""One pre-LayerNorm transformer block in which the first
    :obj:`num_queries` tokens attend over all tokens under a boolean mask:

    .. math::
        \mathbf{z} &= \mathbf{q} + \mathrm{Drop}\big(\mathrm{MHA}(
        \mathrm{LN}_1(\mathbf{q}), \mathrm{LN}_1(\mathbf{T}),
        \mathrm{LN}_1(\mathbf{T}); \mathbf{A})\big) \\
        \mathbf{z}' &= \mathbf{z} + \mathrm{Drop}\big(\mathrm{FFN}(
        \mathrm{LN}_2(\mathbf{z}))\big)

    where :math:`\mathbf{T}` are all tokens, :math:`\mathbf{q}` its first
    :obj:`num_queries` rows and :math:`\mathbf{A}` the mask (:obj:`True` =
    may attend). Keys and values are projected once for all tokens and the
    attention runs through
    :func:`torch.nn.functional.scaled_dot_product_attention`.

    Args:
        channels (int): token size.
        heads (int): number of attention heads (must divide :obj:`channels`).
        dropout (float): dropout on both residual branches. The attention
            weights themselves are not dropped: over a few hundred memory
            tokens that mask costs more than the rest of the block on CPU.
        ffn_ratio (int): hidden size of the feed-forward network relative to
            :obj:`channels`.

    With a mask, a NaN or Inf token reaches only the queries allowed to
    attend to it (without the guard, ``0 * NaN`` in the masked attention
    would make every query's output NaN).

    Shapes:
        - **input:** tokens :math:`(N, D)`, mask :math:`(Q, N)` or
          :obj:`None` (every query attends to every token)
        - **output:** :math:`(Q, D)`
    """
    def __init__(self, channels: int, heads: int, dropout: float = 0.0,
                 ffn_ratio: int = 2):
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"Token size {channels} must be divisible by "
                             f"heads={heads}")
        self.channels = channels
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(channels)
        self.q_proj = nn.Linear(channels, channels)
        self.kv_proj = nn.Linear(channels, 2 * channels)
        self.out_proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
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
        query = tokens[:num_queries]
        h = self.norm1(tokens)
        # [1, heads, N, D/heads]: one "batch" whose sequence is the token set.
        q = self.q_proj(h[:num_queries]).view(1, num_queries, self.heads, -1)
        kv = self.kv_proj(h)
        poisoned = None
        if mask is not None:
            # A masked-out token must not reach a query, but a NaN key or
            # value would (NaN score, or 0 * NaN = NaN in the weighted sum).
            # Zero non-finite tokens, then give NaN to exactly the queries
            # that may attend to one, as unmasked attention would.
            bad = ~torch.isfinite(kv).all(dim=1)
            kv = torch.where(bad[:, None], kv.new_zeros(()), kv)
            poisoned = (mask & bad[None, :]).any(dim=1)
        k, v = kv.view(1, h.size(0), 2, self.heads, -1).unbind(dim=2)
        attn_mask = None if mask is None else mask.view(1, 1, *mask.shape)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(num_queries, self.channels)
        if poisoned is not None:
            out = torch.where(poisoned[:, None], out.new_full((), math.nan),
                              out)
        z = query + F.dropout(self.out_proj(out), self.dropout, self.training)
        ffn = self.ffn(self.norm2(z))
        return z + F.dropout(ffn, self.dropout, self.training)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'heads={self.heads})')


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
