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
"""
from __future__ import annotations

import warnings
import weakref
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import (MessagePassing, global_add_pool,
                                global_max_pool, global_mean_pool)
from torch_geometric.utils import degree, scatter

from .encoders import AtomEncoder, BondEncoder
from .backbones import BACKBONES, BackboneSpec

POOLINGS = {'mean': global_mean_pool, 'max': global_max_pool,
            'sum': global_add_pool}


def masked_batch_norm(bn: nn.BatchNorm1d, x: Tensor,
                      mask: Optional[Tensor] = None) -> Tensor:
    r""":obj:`bn` applied to :obj:`x` with its training statistics computed
    over the rows where :obj:`mask` is ``True`` only (padded batches, see
    :mod:`pyg_hma.loader.padding`). The running statistics are updated as
    :class:`torch.nn.BatchNorm1d` does (unbiased variance); without a mask,
    or in eval mode, this is ``bn(x)``. Shapes stay static: the count of real
    rows is a tensor, never read on the host."""
    if mask is None or not bn.training:
        return bn(x)
    # The masked sums are matrix-vector products on purpose: written as
    # `(x * w).sum(0)`, torch 2.13's Inductor (CPU) fused them with PyG's
    # scatter into kernels whose backward was wrong (gradients off by up to
    # 100%; eager and aot_eager right). See docs/performance.md.
    weight = mask.to(x.dtype)
    count = weight.sum()
    mean = (weight @ x) / count
    centred = x - mean
    var = (weight @ centred.square()) / count
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = (bn.momentum if bn.momentum is not None
                        else 1.0 / bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.detach(), momentum)
            unbiased = var.detach() * count / (count - 1).clamp(min=1.0)
            bn.running_var.lerp_(unbiased, momentum)
    out = centred * torch.rsqrt(var + bn.eps)
    if bn.affine:
        out = out * bn.weight + bn.bias
    return out


def _sequential(modules: nn.Sequential, x: Tensor,
                mask: Optional[Tensor]) -> Tensor:
    # `modules(x)`, with each BatchNorm restricted to the rows of `mask`.
    for module in modules:
        x = (masked_batch_norm(module, x, mask)
             if isinstance(module, nn.BatchNorm1d) else module(x))
    return x


def graph_batch_info(data) -> tuple:
    r"""Returns ``(batch_vector, num_graphs)`` of a PyG batch, or of a single
    graph (no :obj:`batch` attribute) as a batch of one."""
    batch = getattr(data, 'batch', None)
    if batch is None:
        return data.x.new_zeros(data.x.size(0), dtype=torch.long), 1
    return batch, int(data.num_graphs)


def gcn_norm(edge_index: Tensor, num_nodes: int,
             dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    r"""``(deg, norm)`` of OGB's GCN layer: node degrees counted over
    ``edge_index[0]`` plus one for the self loop (so :math:`\deg \ge 1` and
    :math:`\deg^{-1/2}` is always finite; OGB's inf check would cost a device
    sync for nothing), and every edge's :math:`\deg_i^{-1/2}
    \deg_j^{-1/2}`."""
    row, col = edge_index
    deg = degree(row, num_nodes, dtype=dtype) + 1
    deg_inv_sqrt = deg.pow(-0.5)
    return deg, deg_inv_sqrt[row] * deg_inv_sqrt[col]


# The last batch's `gcn_norm`: (weak reference to its edge_index, the
# tensor's version counter, num_nodes, dtype, (deg, norm)).
_last_gcn_norm: Optional[tuple] = None


def shared_gcn_norm(edge_index: Tensor, num_nodes: int,
                    dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    r""":func:`gcn_norm`, computed once per batch: the result is kept for the
    last :obj:`edge_index` seen (the same tensor object, unmodified since), so
    that every layer of a GCN and the momentum copy of the encoder, which
    runs on the same batch, share it. The values are those
    :func:`gcn_norm` gives: they depend on the graph only, never on weights,
    and do not require gradients. Not cached under :func:`torch.compile`
    (traced inline) or in inference mode (inference tensors cannot be saved
    for a later backward pass)."""
    global _last_gcn_norm
    if (torch.compiler.is_compiling() or torch.is_inference_mode_enabled()
            or edge_index.is_inference()):
        return gcn_norm(edge_index, num_nodes, dtype)
    entry = _last_gcn_norm
    if entry is not None:
        ref, version, n, dt, result = entry
        if (ref() is edge_index and edge_index._version == version
                and n == num_nodes and dt == dtype):
            return result
    result = gcn_norm(edge_index, num_nodes, dtype)
    _last_gcn_norm = (weakref.ref(edge_index), edge_index._version,
                      num_nodes, dtype, result)
    return result


def _csr(index: Tensor, other: Tensor, values: Tensor, size: int) -> Tensor:
    # The CSR matrix with values[e] at (index[e], other[e]); entries of a row
    # keep their edge order (a stable sort), duplicates stay and add up. An
    # index already in order (the source nodes of a batch of coalesced
    # graphs) is its own stable sort: no sort, no gather.
    if index.numel() < 2 or bool((index[1:] >= index[:-1]).all()):
        ordered_other, ordered_values = other, values
    else:  # int32 keys sort about 2x faster, in the same stable order
        keys = index.to(torch.int32) if size < 2 ** 31 else index
        order = torch.argsort(keys, stable=True)
        ordered_other, ordered_values = other[order], values[order]
    crow = index.new_zeros(size + 1)
    torch.cumsum(torch.bincount(index, minlength=size), 0, out=crow[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(crow, ordered_other, ordered_values,
                                       (size, size), check_invariants=False)


def adjacency(edge_index: Tensor, num_nodes: int, weight: Optional[Tensor],
              dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    r"""``(A, A^T)`` as CSR matrices, :math:`A_{ij} = \sum_{e: j \to i}
    w_e` (:math:`w = 1` when :obj:`weight` is ``None``)."""
    row, col = edge_index
    if weight is None:
        weight = torch.ones(row.numel(), dtype=dtype, device=row.device)
    return (_csr(col, row, weight, num_nodes),
            _csr(row, col, weight, num_nodes))


class _SparseNeighbourSum(torch.autograd.Function):
    # A @ x, with the gradient A^T @ grad (A is constant).
    @staticmethod
    def forward(ctx, x: Tensor, adj: Tensor, adj_t: Tensor) -> Tensor:
        ctx.adj_t = adj_t
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.adj_t @ grad, None, None


# The last adjacency built: (weak references to its edge_index and weight,
# the edge_index's version counter, num_nodes, dtype, (A, A^T)).
_last_adjacency: Optional[tuple] = None


def neighbour_sum(x: Tensor, edge_index: Tensor,
                  weight: Optional[Tensor] = None) -> Tensor:
    r"""Every node's sum of its in-neighbours' rows,
    :math:`\mathbf{o}_i = \sum_{j \to i} w_{ji} \mathbf{x}_j` (PyG's
    ``scatter(w * x[row], col, reduce='sum')``).

    On a CPU, outside :func:`torch.compile`, this is a sparse matrix product
    with the batch's CSR adjacency (and its transpose for the backward pass),
    built once per batch: the last one is kept for the same
    :obj:`edge_index` and :obj:`weight` objects, so every layer and the
    momentum copy of an encoder reuse it (not kept in inference mode). On 3
    layers of 32 NCI1-sized graphs that is about 2x cheaper than gathering
    a row per edge and scattering it back, 6x on IMDB's dense graphs (see
    ``docs/performance.md``). Each node adds its messages in edge order
    either way; the float results agree to rounding. Elsewhere (a GPU,
    compiled graphs, other dtypes, a :obj:`weight` that requires a
    gradient) PyG's gather and scatter run."""
    global _last_adjacency
    num_nodes = x.size(0)
    if (x.device.type != 'cpu' or torch.compiler.is_compiling()
            or x.dtype not in (torch.float32, torch.float64)
            or (weight is not None and weight.requires_grad)):
        row, col = edge_index
        msg = x.index_select(0, row)
        if weight is not None:
            msg = weight.view(-1, 1) * msg
        return scatter(msg, col, 0, dim_size=num_nodes, reduce='sum')
    cache = not (torch.is_inference_mode_enabled()
                 or edge_index.is_inference())
    entry = _last_adjacency if cache else None
    if (entry is not None and entry[0]() is edge_index
            and (entry[1] is None if weight is None
                 else entry[1] is not None and entry[1]() is weight)
            and entry[2:5] == (edge_index._version, num_nodes, x.dtype)):
        pair = entry[5]
    else:
        pair = adjacency(edge_index, num_nodes, weight, x.dtype)
        if cache:
            _last_adjacency = (
                weakref.ref(edge_index),
                None if weight is None else weakref.ref(weight),
                edge_index._version, num_nodes, x.dtype, pair)
    return _SparseNeighbourSum.apply(x, *pair)


class GINConv(MessagePassing):
    r"""OGB's GIN layer: :math:`\mathrm{MLP}((1 + \epsilon)\mathbf{x}_i +
    \sum_{j} \mathrm{ReLU}(\mathbf{x}_j + \mathbf{e}_{ji}))`, with
    :math:`\mathbf{e}_{ji} = 0` when there are no edge features.

    Args:
        emb_dim (int): node embedding size.
        bond_encoder (bool, optional): embed OGB bond features.
            (default: :obj:`False`)
    """
    def __init__(self, emb_dim: int, bond_encoder: bool = False):
        super().__init__(aggr='add')
        self.mlp = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim),
                                 nn.BatchNorm1d(2 * emb_dim), nn.ReLU(),
                                 nn.Linear(2 * emb_dim, emb_dim))
        self.eps = nn.Parameter(torch.zeros(1))
        self.edge_encoder = BondEncoder(emb_dim) if bond_encoder else None

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                node_mask: Optional[Tensor] = None) -> Tensor:
        if self.edge_encoder is None:  # relu(x[row]) is relu(x)[row]
            out = neighbour_sum(F.relu(x), edge_index)
        else:
            out = self.propagate(edge_index, x=x,
                                 edge_emb=self.edge_encoder(edge_attr))
        return _sequential(self.mlp, (1 + self.eps) * x + out, node_mask)

    def message(self, x_j: Tensor, edge_emb: Optional[Tensor]) -> Tensor:
        return F.relu(x_j if edge_emb is None else x_j + edge_emb)


class GCNConv(MessagePassing):
    r"""OGB's GCN layer: symmetric-normalised sum of
    :math:`\mathrm{ReLU}(\mathbf{W}\mathbf{x}_j + \mathbf{e}_{ji})` plus a
    self term :math:`\mathrm{ReLU}(\mathbf{W}\mathbf{x}_i + \mathbf{r}) /
    \deg_i`, with degrees counted with a self loop.

    Args:
        emb_dim (int): node embedding size.
        bond_encoder (bool, optional): embed OGB bond features.
            (default: :obj:`False`)
    """
    def __init__(self, emb_dim: int, bond_encoder: bool = False):
        super().__init__(aggr='add')
        self.linear = nn.Linear(emb_dim, emb_dim)
        self.root_emb = nn.Embedding(1, emb_dim)
        self.edge_encoder = BondEncoder(emb_dim) if bond_encoder else None

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                node_mask: Optional[Tensor] = None,
                norm: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        r""":obj:`norm` is :func:`gcn_norm` of the batch, computed here when
        not given (:class:`GNN` computes it once for all its layers)."""
        # `node_mask` is accepted for a uniform call; GCN has no BatchNorm.
        x = self.linear(x)
        deg, norm = (gcn_norm(edge_index, x.size(0), x.dtype)
                     if norm is None else norm)
        if self.edge_encoder is None:  # relu(x[row]) is relu(x)[row]
            out = neighbour_sum(F.relu(x), edge_index, norm)
        else:
            out = self.propagate(edge_index, x=x,
                                 edge_emb=self.edge_encoder(edge_attr),
                                 norm=norm)
        return out + F.relu(x + self.root_emb.weight) / deg.view(-1, 1)

    def message(self, x_j: Tensor, edge_emb: Optional[Tensor],
                norm: Tensor) -> Tensor:
        h = x_j if edge_emb is None else x_j + edge_emb
        return norm.view(-1, 1) * F.relu(h)


class GNN(nn.Module):
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
        self.uses_edge_attr = bond_encoder

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
        self.pool = POOLINGS[pooling]
        self.reset_parameters()

    def reset_parameters(self):
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        if self.virtual_node:
            nn.init.zeros_(self.vn_emb.weight)  # OGB starts it at 0

    def forward(self, data) -> Tensor:
        x, edge_index = data.x, data.edge_index
        edge_attr = data.edge_attr if self.uses_edge_attr else None
        batch, num_graphs = graph_batch_info(data)
        node_mask = getattr(data, 'node_mask', None)
        # A padded batch's padding nodes form one more graph (dropped below);
        # its row is masked out of the virtual node's BatchNorm.
        # int(): under torch.compile num_graphs can be a symbolic int, and
        # torch 2.11 fails to trace `SymInt + bool` (seen on an H100: the
        # last, smaller batch of an epoch crashed the compiled GCN).
        size = num_graphs + int(node_mask is not None)
        graph_mask = None
        if node_mask is not None and self.virtual_node:
            graph_mask = torch.arange(size, device=x.device) < num_graphs
        if not self.atom_encoder and not x.is_floating_point():
            x = x.float()

        h = self.node_encoder(x)
        # GCN: degrees and edge weights once per batch, for every layer (and
        # for the momentum copy of this encoder on the same batch).
        conv_kwargs = (dict(norm=shared_gcn_norm(edge_index, h.size(0),
                                                 h.dtype))
                       if self.conv == 'gcn' else {})
        vn = (self.vn_emb.weight.expand(size, -1)
              if self.virtual_node else None)
        for i in range(self.num_layers):
            if vn is not None:
                h = h + vn[batch]
            h_in = h
            h = self.convs[i](h, edge_index, edge_attr, node_mask=node_mask,
                              **conv_kwargs)
            h = masked_batch_norm(self.norms[i], h, node_mask)
            if i < self.num_layers - 1:
                h = F.relu(h)
            h = F.dropout(h, self.dropout, training=self.training)
            if self.residual:
                h = h + h_in
            if vn is not None and i < self.num_layers - 1:
                # Message from the graph's nodes (input of this layer) to its
                # virtual node, as in OGB.
                vn_in = global_add_pool(h_in, batch, size) + vn
                vn_new = F.dropout(_sequential(self.vn_mlps[i], vn_in,
                                               graph_mask), self.dropout,
                                   training=self.training)
                vn = vn + vn_new if self.residual else vn_new
        out = self.pool(h, batch, size)
        return out[:num_graphs] if size != num_graphs else out

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
