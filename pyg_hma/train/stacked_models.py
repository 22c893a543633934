r"""The stacked forwards of the supported modules (see
:mod:`pyg_hma.train.stacked`): every encoder of :data:`ENCODERS` (the GNNs,
G-Mixup's GIN, Colored MNIST's MLP and CNN), HMA's attention blocks and
readout (:func:`readout_forward`), and its queue write
(:func:`write_queues`), each on parameters ``P`` stacked along a leading
seed dimension.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..models.gnn import GNN, POOLINGS
from ..models.mnist import IRMMLP, SmallCNN
from ..models.tu_gin import GMixupGIN
from ..nn import HMAReadout
from ..nn.queue import write_queue
from ..nn.utils import nonfinite_rows
from .stacked_layers import (ImageUnion, Noise, UnionBatch, add_rows,
                             layer_norm, linear, scale_rows, seed_batch_norm,
                             sum_of_embeddings)

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
    S, B, _ = keys.shape
    labels = labels.reshape(S, B).long()
    valid = (~nonfinite_rows(keys) & (labels >= 0)
             & (labels < ro.num_classes))
    count = write_queue(P[pre + 'queue_keys'], P[pre + 'queue_labels'],
                        P[pre + 'queue_ptr'],
                        keys.to(P[pre + 'queue_keys'].dtype), labels, valid)
    skipped = P.get(pre + 'num_skipped_writes')
    if skipped is not None:
        skipped.add_(B - count)


__all__ = ['ENCODERS', 'encoder_forward', 'gnn_forward',
           'gmixup_gin_forward', 'mlp_forward', 'cnn_forward',
           'attention_block', 'readout_forward', 'write_queues']
