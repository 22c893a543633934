r"""The GNN backbones of OGB's molecule example and of CIGA.

CIGA's ``models/conv.py`` is OGB's ``examples/graphproppred/mol/conv.py``
with a linear node encoder for non-molecular inputs, so one implementation
serves both:

* OGB molecules (:obj:`atom_encoder=True, bond_encoder=True`): 5 layers, 300
  dims, dropout 0.5, mean pooling, optionally a virtual node (GCN-v, GIN-v);
* CIGA's TU size-shift and Graph-SST5/Twitter tasks: a linear node encoder,
  no edge features, 3 layers, 32 (TU) or 128 (text) dims, mean or max
  pooling.

Each layer is ``conv -> BatchNorm -> ReLU (not after the last layer) ->
dropout``, node representations are those of the last layer (``JK='last'``)
and a global pooling gives one embedding per graph. Only PyG's own scatter
is used, so the models run without ``torch-scatter``. The number of graphs is
read from ``batch.num_graphs`` (a Python int) rather than from
``batch.batch[-1].item()``, so a forward pass does not synchronise with the
device.

The math is written once, with a leading seed dimension
(:meth:`GNN.forward_stacked`, :func:`gin_layer`, :func:`gcn_layer`): a
module's own forward runs it on its weights as a group of one, the
seed-batched trainer on S stacked copies.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, \
    global_mean_pool
from torch_geometric.utils import scatter

from ..nn.stacked import (add_rows, linear, scale_rows, seed_batch_norm,
                          stacked_state, sum_of_embeddings)
from .backbones import BACKBONES, BackboneSpec
from .encoders import AtomEncoder, BondEncoder
from .union import (StackedEncoder, UnionBatch, gcn_norm, graph_batch_info,
                    neighbour_sum, shared_gcn_norm)

POOLINGS = {'mean': global_mean_pool, 'max': global_max_pool,
            'sum': global_add_pool}


def _edge_embedding(conv: nn.Module, P: Dict[str, Tensor], c: str,
                    data: UnionBatch) -> Optional[Tensor]:
    # Every edge's bond embedding, in its seed's tables (None: no encoder).
    if conv.edge_encoder is None:
        return None
    return torch.cat(sum_of_embeddings(
        conv.edge_encoder, P, c + 'edge_encoder.',
        data.edge_attr.split(data.edge_counts)))


def gin_layer(conv: 'GINConv', P: Dict[str, Tensor], c: str, h: Tensor,
              data: UnionBatch, training: bool) -> Tensor:
    r""":class:`GINConv` :obj:`conv` on node rows :obj:`h` ``[S, N, d]`` of
    the union :obj:`data`, with the weights ``P[c + name]`` ``[S, ...]``."""
    S, N, d = h.shape
    edge_emb = _edge_embedding(conv, P, c, data)
    if edge_emb is None:  # relu(h[row]) is relu(h)[row]
        out = data.aggregate(F.relu(h).reshape(S * N, d), 'sum')
    else:
        row, col = data.edge_index
        hf = h.reshape(S * N, d).index_select(0, row) + edge_emb
        out = scatter(F.relu(hf), col, 0, dim_size=S * N, reduce='sum')
    z = scale_rows(h, 1 + P[c + 'eps'], data.rows) + out.view(S, N, d)
    z = linear(z, P[c + 'mlp.0.weight'], P[c + 'mlp.0.bias'], data.rows)
    z = seed_batch_norm(z, P, c + 'mlp.1.', conv.mlp[1], data.rows,
                        training)
    z = F.relu(z)
    return linear(z, P[c + 'mlp.3.weight'], P[c + 'mlp.3.bias'], data.rows)


def gcn_layer(conv: 'GCNConv', P: Dict[str, Tensor], c: str, h: Tensor,
              data: UnionBatch, training: bool) -> Tensor:
    r""":class:`GCNConv` :obj:`conv` on node rows :obj:`h` ``[S, N, d]`` of
    the union :obj:`data`, with the weights ``P[c + name]`` ``[S, ...]``."""
    S, N, d = h.shape
    edge_emb = _edge_embedding(conv, P, c, data)
    deg, norm = data.gcn_norm(h.dtype)
    z = linear(h, P[c + 'linear.weight'], P[c + 'linear.bias'], data.rows)
    if edge_emb is None:  # relu(z[row]) is relu(z)[row]
        out = data.aggregate(F.relu(z).reshape(S * N, d), 'gcn')
    else:
        row, col = data.edge_index
        zf = z.reshape(S * N, d).index_select(0, row) + edge_emb
        msg = norm.view(-1, 1) * F.relu(zf)
        out = scatter(msg, col, 0, dim_size=S * N, reduce='sum')
    root = P[c + 'root_emb.weight']  # [S, 1, d]
    return (out.view(S, N, d) + F.relu(add_rows(z, root, data.rows))
            / deg.view(S, N, 1))


def _one_graph(layer, conv: nn.Module, x: Tensor, edge_index: Tensor,
               edge_attr: Optional[Tensor], node_mask: Optional[Tensor],
               norm: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    # A layer module's own forward: its layer function, as a group of one.
    data = UnionBatch.of_one(SimpleNamespace(
        x=x, edge_index=edge_index, edge_attr=edge_attr,
        node_mask=node_mask))
    if norm is not None:
        data._gcn_norm = norm
    return layer(conv, stacked_state(conv), '', x.unsqueeze(0), data,
                 conv.training).squeeze(0)


class GINConv(nn.Module):
    r"""OGB's GIN layer: :math:`\mathrm{MLP}((1 + \epsilon)\mathbf{x}_i +
    \sum_{j} \mathrm{ReLU}(\mathbf{x}_j + \mathbf{e}_{ji}))`, with
    :math:`\mathbf{e}_{ji} = 0` when there are no edge features. Its math
    is :func:`gin_layer`, which :class:`GNN` runs.

    Args:
        emb_dim (int): node embedding size.
        bond_encoder (bool, optional): embed OGB bond features.
            (default: :obj:`False`)
    """
    def __init__(self, emb_dim: int, bond_encoder: bool = False):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim),
                                 nn.BatchNorm1d(2 * emb_dim), nn.ReLU(),
                                 nn.Linear(2 * emb_dim, emb_dim))
        self.eps = nn.Parameter(torch.zeros(1))
        self.edge_encoder = BondEncoder(emb_dim) if bond_encoder else None

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                node_mask: Optional[Tensor] = None) -> Tensor:
        return _one_graph(gin_layer, self, x, edge_index, edge_attr,
                          node_mask)


class GCNConv(nn.Module):
    r"""OGB's GCN layer: symmetric-normalised sum of
    :math:`\mathrm{ReLU}(\mathbf{W}\mathbf{x}_j + \mathbf{e}_{ji})` plus a
    self term :math:`\mathrm{ReLU}(\mathbf{W}\mathbf{x}_i + \mathbf{r}) /
    \deg_i`, with degrees counted with a self loop. Its math is
    :func:`gcn_layer`, which :class:`GNN` runs.

    Args:
        emb_dim (int): node embedding size.
        bond_encoder (bool, optional): embed OGB bond features.
            (default: :obj:`False`)
    """
    def __init__(self, emb_dim: int, bond_encoder: bool = False):
        super().__init__()
        self.linear = nn.Linear(emb_dim, emb_dim)
        self.root_emb = nn.Embedding(1, emb_dim)
        self.edge_encoder = BondEncoder(emb_dim) if bond_encoder else None

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                node_mask: Optional[Tensor] = None,
                norm: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        r""":obj:`norm` is :func:`gcn_norm` of the batch, computed here when
        not given (shared by every layer reading the same
        :obj:`edge_index`)."""
        return _one_graph(gcn_layer, self, x, edge_index, edge_attr,
                          node_mask, norm)


class GNN(StackedEncoder):
    r"""A GIN or GCN graph encoder as in OGB's molecule example and CIGA,
    mapping a batch of graphs to pooled embeddings :math:`(B, \text{hidden})`.

    Args:
        in_channels (int, optional): node feature size for the linear node
            encoder; ignored with :obj:`atom_encoder=True`.
        hidden_channels (int, optional): embedding size. (default: :obj:`300`)
        num_layers (int, optional): message-passing layers.
            (default: :obj:`5`)
        conv (str, optional): :obj:`"gin"` or :obj:`"gcn"`.
            (default: :obj:`"gin"`)
        virtual_node (bool, optional): add OGB's virtual node.
            (default: :obj:`False`)
        dropout (float, optional): dropout after every layer.
            (default: :obj:`0.5`)
        pooling (str, optional): :obj:`"mean"`, :obj:`"max"` or :obj:`"sum"`.
            (default: :obj:`"mean"`)
        residual (bool, optional): residual connections between layers.
            (default: :obj:`False`)
        atom_encoder (bool, optional): embed OGB's integer atom features
            instead of a linear encoder. (default: :obj:`False`)
        bond_encoder (bool, optional): embed OGB's integer bond features in
            every layer; otherwise edge features are ignored.
            (default: :obj:`False`)

    Padded batches (:mod:`pyg_hma.loader.padding`, for static shapes) are
    supported: the padding graph is pooled apart and dropped, and BatchNorm
    statistics skip the padding nodes.

    Shapes:
        - **input:** a PyG batch with :obj:`x`, :obj:`edge_index`,
          :obj:`batch` (and :obj:`edge_attr` with :obj:`bond_encoder`;
          :obj:`node_mask` when padded)
        - **output:** :math:`(B, \text{hidden\_channels})`
    """
    supports_padding = True

    def __init__(self, in_channels: Optional[int] = None,
                 hidden_channels: int = 300, num_layers: int = 5,
                 conv: str = 'gin', virtual_node: bool = False,
                 dropout: float = 0.5, pooling: str = 'mean',
                 residual: bool = False, atom_encoder: bool = False,
                 bond_encoder: bool = False):
        super().__init__()
        if conv not in ('gin', 'gcn'):
            raise ValueError(f"conv must be 'gin' or 'gcn' (got '{conv}')")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {tuple(POOLINGS)} "
                             f"(got '{pooling}')")
        if num_layers < 1 or (virtual_node and num_layers < 2):
            raise ValueError(f"num_layers must be >= 1 (>= 2 with a virtual "
                             f"node), got {num_layers}")
        if not atom_encoder and (in_channels is None or in_channels < 1):
            raise ValueError("in_channels must be a positive int unless "
                             "atom_encoder=True")
        self.in_channels = in_channels
        self.hidden_channels = self.out_channels = hidden_channels
        self.num_layers = num_layers
        self.conv = conv
        self.virtual_node = virtual_node
        self.dropout = dropout
        self.pooling = pooling
        self.residual = residual
        self.atom_encoder = atom_encoder

        self.node_encoder = (AtomEncoder(hidden_channels) if atom_encoder
                             else nn.Linear(in_channels, hidden_channels))
        Conv = GINConv if conv == 'gin' else GCNConv
        self.convs = nn.ModuleList(
            Conv(hidden_channels, bond_encoder) for _ in range(num_layers))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(hidden_channels) for _ in range(num_layers))
        if virtual_node:
            self.vn_emb = nn.Embedding(1, hidden_channels)
            self.vn_mlps = nn.ModuleList(
                nn.Sequential(nn.Linear(hidden_channels, 2 * hidden_channels),
                              nn.BatchNorm1d(2 * hidden_channels), nn.ReLU(),
                              nn.Linear(2 * hidden_channels, hidden_channels),
                              nn.BatchNorm1d(hidden_channels), nn.ReLU())
                for _ in range(num_layers - 1))
        self.reset_parameters()

    def reset_parameters(self):
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        if self.virtual_node:
            nn.init.zeros_(self.vn_emb.weight)  # OGB starts it at 0

    def _node_encoding(self, P: Dict[str, Tensor], pre: str,
                       data: UnionBatch) -> Tensor:
        # The node encoder of every seed: [S, N, hidden].
        S, N = data.S, data.size
        x = data.x.view(S, N, -1)
        if self.atom_encoder:
            # Each seed's real rows (padding rows: feature 0 of every
            # column).
            rows = (data.rows if isinstance(data.rows, list) else [N] * S)
            embedded = sum_of_embeddings(self.node_encoder, P,
                                         pre + 'node_encoder.',
                                         [x[s, :n] for s, n in
                                          enumerate(rows)])
            if S == 1 and rows[0] == N:
                return embedded[0].unsqueeze(0)
            out = x.new_zeros((S, N, embedded[0].size(-1)),
                              dtype=embedded[0].dtype)
            for s, (n, part) in enumerate(zip(rows, embedded)):
                out[s, :n] = part
            return out
        if not x.is_floating_point():
            x = x.float()
        return linear(x, P[pre + 'node_encoder.weight'],
                      P[pre + 'node_encoder.bias'], data.rows)

    def _virtual_node_update(self, P: Dict[str, Tensor], pre: str, i: int,
                             vn_in: Tensor, noise, training: bool) -> Tensor:
        # OGB's virtual-node MLP of layer i on [S, B, d] (Linear, BatchNorm,
        # ReLU, Linear, BatchNorm, ReLU, dropout), BatchNorm per seed.
        S, B, _ = vn_in.shape
        mlp, m = self.vn_mlps[i], f'{pre}vn_mlps.{i}.'
        rows = [B] * S
        z = linear(vn_in, P[m + '0.weight'], P[m + '0.bias'])
        z = F.relu(seed_batch_norm(z, P, m + '1.', mlp[1], rows, training))
        z = linear(z, P[m + '3.weight'], P[m + '3.bias'])
        z = F.relu(seed_batch_norm(z, P, m + '4.', mlp[4], rows, training))
        if training:
            z = noise.dropout(z, self.dropout)
        return z

    def forward_stacked(self, P: Dict[str, Tensor], pre: str,
                        data: UnionBatch, noise, training: bool) -> Tensor:
        r"""Pooled embeddings ``[S, B, hidden]`` of every seed's batch in
        the union :obj:`data` (see
        :class:`~pyg_hma.models.union.StackedEncoder`)."""
        S, N, B = data.S, data.size, data.B
        h = self._node_encoding(P, pre, data)
        d = h.size(-1)
        layer = gin_layer if self.conv == 'gin' else gcn_layer
        vn = None
        if self.virtual_node:
            vn = P[pre + 'vn_emb.weight'].expand(S, B, d)
        for i in range(self.num_layers):
            if vn is not None:
                # Each node receives its graph's virtual node (padding:
                # zero).
                vn_rows = torch.cat([vn.reshape(S * B, d), vn.new_zeros(1, d)])
                h = h + vn_rows.index_select(0, data.batch).view(S, N, d)
            h_in = h
            h = layer(self.convs[i], P, f'{pre}convs.{i}.', h, data, training)
            h = seed_batch_norm(h, P, f'{pre}norms.{i}.', self.norms[i],
                                data.rows, training)
            if i < self.num_layers - 1:
                h = F.relu(h)
            if training:
                h = noise.dropout(h, self.dropout, data.rows)
            if self.residual:
                h = h + h_in
            if vn is not None and i < self.num_layers - 1:
                # Message from the graph's nodes (this layer's input) to its
                # virtual node, as in OGB.
                pooled = scatter(h_in.reshape(S * N, d), data.batch, 0,
                                 dim_size=S * B + 1, reduce='sum')
                vn_new = self._virtual_node_update(
                    P, pre, i, pooled[:S * B].view(S, B, d) + vn, noise,
                    training)
                vn = vn + vn_new if self.residual else vn_new
        size = S * B
        pooled = POOLINGS[self.pooling](h.reshape(S * N, d), data.batch,
                                        size + 1)
        return pooled[:size].view(S, B, d)

    def __repr__(self) -> str:
        vn = ', virtual_node=True' if self.virtual_node else ''
        return (f'{self.__class__.__name__}({self.conv}, '
                f'{self.hidden_channels}, num_layers={self.num_layers}, '
                f'pooling={self.pooling}{vn})')


# OGB's GNNs (and CIGA's, with `pooling`): the -v names add a virtual node.
for _name, _label, _fixed in (
        ('gcn', 'GCN', dict(conv='gcn')),
        ('gin', 'GIN', dict(conv='gin')),
        ('gcn-v', 'GCN-v', dict(conv='gcn', virtual_node=True)),
        ('gin-v', 'GIN-v', dict(conv='gin', virtual_node=True))):
    BACKBONES.register(BackboneSpec(_name, GNN, _label, _fixed))


__all__ = ['GNN', 'GINConv', 'GCNConv', 'gin_layer', 'gcn_layer', 'POOLINGS',
           'gcn_norm', 'shared_gcn_norm', 'neighbour_sum', 'graph_batch_info']
