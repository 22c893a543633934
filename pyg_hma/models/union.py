r"""Graph batches as the layers read them: the union of the S batches of a
seed-batched step, one batch per seed, in a padded layout
(:class:`UnionBatch`; images: :class:`ImageUnion`), and the message passing
on it (:func:`neighbour_sum`, OGB's GCN normalisation :func:`gcn_norm`). A
module run on its own reads its batch as a union of one
(:meth:`UnionBatch.of_one`).

The padded layout: node tensors are ``[S, N_max, d]`` (seed ``s``'s own
batch in rows ``:N_s``), so every linear layer is one batched matrix
product with per-seed weights; message passing runs once on the disjoint
union of the S batches (the edge indices of seed ``s`` shifted by
``s * N_max``); every node sums its messages in edge order, as alone.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.utils import degree, scatter

from ..nn.stacked import GLOBAL_NOISE, stacked_state


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


# --------------------------------------------------------------------------
# The union of S batches
# --------------------------------------------------------------------------

class UnionBatch:
    r"""S graph batches (one per seed, with the same number of graphs
    :obj:`B`) in the padded layout of :class:`StackedModel`.

    Attributes: :obj:`x` ``[S * N_max, F]``, :obj:`edge_index` (shifted to
    padded positions), :obj:`edge_attr` (edge features in the order of
    :obj:`edge_index`, or ``None``), :obj:`batch` (graph ``s * B + g``; padding rows in
    graph ``S * B``), :obj:`y` ``[S, B, ...]``, :obj:`rows` (the real
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
        static = pad is not None
        if static:  # room for one padding node in every seed's rows
            N = _round_up(N + 1, pad[0])
        first = batches[0].x
        device = first.device
        self.S, self.B, self.size = S, B, N
        starts = np.arange(S) * N
        # Real node positions in the padded layout, built on the host.
        pos = np.concatenate([np.arange(n) + s for n, s in
                              zip(num_nodes, starts)])
        pos_t = torch.from_numpy(pos).to(device)
        x = first.new_zeros((S * N, ) + tuple(first.shape[1:]))
        x.index_copy_(0, pos_t, torch.cat([b.x for b in batches]))
        self.x = x
        edges = [int(b.edge_index.size(1)) for b in batches]
        extra = 0
        if static:  # self loops on the last seed's last padding node
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
        if static:
            counts = torch.tensor(num_nodes, device=device)
            self.rows = (torch.arange(N, device=device).view(1, N)
                         < counts.view(S, 1))

    @classmethod
    def of_one(cls, data) -> 'UnionBatch':
        r"""One PyG batch (or one graph, without :obj:`batch`) as a union of
        one seed, without copies: what a module's own forward reads. A
        padded batch (:mod:`pyg_hma.loader.padding`: a :obj:`node_mask`, its
        padding nodes in graph :obj:`num_graphs`) keeps its layout; its
        padding graph is pooled apart and dropped, and BatchNorm counts the
        rows of the mask."""
        self = cls.__new__(cls)
        batch, B = graph_batch_info(data)
        x, edge_index = data.x, data.edge_index
        N = x.size(0)
        self.S, self.B, self.size = 1, B, N
        self.x, self.edge_index, self.batch = x, edge_index, batch
        self.edge_counts = [int(edge_index.size(1))]
        self.edge_attr = getattr(data, 'edge_attr', None)
        y = getattr(data, 'y', None)
        self.y = None if y is None else y.unsqueeze(0)
        self.env = None
        self._gcn_norm = None
        mask = getattr(data, 'node_mask', None)
        self.rows = [N] if mask is None else mask.view(1, N)
        return self

    def gcn_norm(self, dtype) -> Tuple[Tensor, Tensor]:
        r"""``(deg, norm)`` of OGB's GCN layer (degree with a self loop),
        computed once per batch."""
        if torch.compiler.is_compiling():  # no cache inside a graph
            return gcn_norm(self.edge_index, self.S * self.size, dtype)
        if self._gcn_norm is None:
            # Shared with every union of the same edge_index (a module's
            # layers and its momentum copy each read the batch as one).
            self._gcn_norm = shared_gcn_norm(self.edge_index,
                                             self.S * self.size, dtype)
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

    @classmethod
    def of_one(cls, data) -> 'ImageUnion':
        r"""One batch of images as a union of one seed (a module's own
        forward)."""
        self = cls.__new__(cls)
        self.x = data.x.unsqueeze(0)
        self.S, self.B = 1, int(data.x.size(0))
        y, env = getattr(data, 'y', None), getattr(data, 'env', None)
        self.y = None if y is None else y.unsqueeze(0)
        self.env = None if env is None else env.view(1, -1).long()
        return self


def union_of(batches: Sequence, pad: Optional[Tuple[int, int]] = None):
    r"""The S batches of a step as the stacked model reads them: a
    :class:`UnionBatch` of graph batches (with static shapes when
    :obj:`pad` is given) or an :class:`ImageUnion` of image batches."""
    if getattr(batches[0], 'edge_index', None) is None:
        return ImageUnion(batches)
    return UnionBatch(batches, pad)


def union_of_one(data):
    r"""One batch as a union of one seed: a :class:`UnionBatch` of a graph
    batch, an :class:`ImageUnion` of images."""
    if getattr(data, 'edge_index', None) is None:
        return ImageUnion.of_one(data)
    return UnionBatch.of_one(data)


class StackedEncoder(nn.Module):
    r"""An encoder whose math is written once, in :meth:`forward_stacked`,
    on weights with a leading seed dimension (:mod:`pyg_hma.nn.stacked`):
    its own :meth:`forward` runs it on its weights as a group of one, and
    the seed-batched trainer on S stacked copies. A new backbone subclasses
    this and writes :meth:`forward_stacked` (``docs/extending.md``)."""
    def forward_stacked(self, P: Dict[str, Tensor], pre: str, data,
                        noise, training: bool) -> Tensor:
        r"""Pooled embeddings ``[S, B, d]`` of every seed's batch in
        :obj:`data` (:class:`UnionBatch` or :class:`ImageUnion`), with the
        weights ``P[pre + name]`` ``[S, ...]`` and dropout from
        :obj:`noise`."""
        raise NotImplementedError

    def forward(self, data) -> Tensor:
        return self.forward_stacked(stacked_state(self), '',
                                    union_of_one(data), GLOBAL_NOISE,
                                    self.training).squeeze(0)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


__all__ = ['UnionBatch', 'ImageUnion', 'union_of', 'union_of_one',
           'StackedEncoder', 'graph_batch_info',
           'gcn_norm', 'shared_gcn_norm', 'adjacency', 'neighbour_sum']
