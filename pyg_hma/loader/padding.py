r"""Static-shape mini-batches: graph batches padded to fixed node and edge
budgets.

CUDA-graph capture (``torch.compile(mode='reduce-overhead')``) and
shape-specialised compilation replay one recorded program per input shape.
Graph batches change size at every step, so :func:`pad_batch` pads a batch to
a node budget and an edge budget, and :class:`PaddedLoader` rounds every
batch's sizes up to multiples of a step, so that a whole epoch needs only a
handful of distinct shapes.

The padding is invisible to a model that supports it (the GNNs of
:mod:`pyg_hma.models` do; they set :obj:`supports_padding = True`):

* the padding nodes form one extra graph, index :obj:`num_graphs` in
  :obj:`batch`, which the model pools separately and drops, so the output
  still has :obj:`num_graphs` rows;
* the padding edges are self loops on the first padding node, so no message
  reaches a real node;
* :obj:`node_mask` (``True`` for real nodes) lets BatchNorm compute its
  statistics over the real nodes only.

Node features and edge features of the padding are zeros (a valid index for
OGB's integer atom and bond features). Graph-level attributes (``y``, ...)
are not padded. With dropout switched off, a model's outputs, losses and
gradients on a padded batch equal those on the original batch up to float
rounding (``tests/test_padding.py``); with dropout on, the padded rows draw
random numbers too, so the random stream differs from the unpadded run's.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Batch

from ._pyg_internals import batch_store, copy_with_own_store, slice_dict


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def batch_sizes(batch: Batch) -> Tuple[int, int]:
    r"""The ``(num_nodes, num_edges)`` of a batch, read from its host-side
    slice table (no device synchronisation)."""
    slices = slice_dict(batch)
    if not slices or 'edge_index' not in slices:
        raise ValueError('pad_batch expects a mini-batch made by PyG\'s '
                         'DataLoader or DeviceGraphLoader (with edge_index)')
    node_key = 'x' if 'x' in slices else None
    num_nodes = (int(slices[node_key][-1]) if node_key is not None
                 else int(batch.num_nodes))
    return num_nodes, int(slices['edge_index'][-1])


def pad_batch(batch: Batch, num_nodes: int, num_edges: int) -> Batch:
    r"""Pads :obj:`batch` to exactly :obj:`num_nodes` nodes and
    :obj:`num_edges` edges (see the module docstring).

    Node-level attributes are those sliced like :obj:`x`, edge-level ones
    those with ``edge`` in their name (PyG's convention). The result has
    :obj:`node_mask`, keeps :obj:`num_graphs`, and
    shares no tensor with :obj:`batch` that it changed.

    Args:
        batch (torch_geometric.data.Batch): a mini-batch.
        num_nodes (int): node budget, at least one more than the batch's
            nodes (the padding graph needs a node for its self loops).
        num_edges (int): edge budget, at least the batch's edges.
    """
    nodes, edges = batch_sizes(batch)
    if num_nodes < nodes + 1 or num_edges < edges:
        raise ValueError(
            f'Padding budget too small: the batch has {nodes} nodes and '
            f'{edges} edges; the budget must hold at least {nodes + 1} nodes '
            f'(one padding node) and {edges} edges, got {num_nodes} and '
            f'{num_edges}')
    pad_n, pad_e = num_nodes - nodes, num_edges - edges
    slices = slice_dict(batch)
    node_slices = slices.get('x')
    out = copy_with_own_store(batch)
    store = batch_store(out)
    for key, value in batch_store(batch).items():
        if not isinstance(value, Tensor) or key in ('batch', 'ptr'):
            continue
        if key == 'edge_index':
            loops = value.new_full((2, pad_e), nodes)
            store[key] = torch.cat([value, loops], dim=1)
        elif 'edge' in key:
            dim = batch.__cat_dim__(key, value)
            store[key] = _cat_zeros(value, dim, pad_e)
        elif node_slices is not None and key in slices and \
                torch.equal(slices[key], node_slices):
            dim = batch.__cat_dim__(key, value)
            store[key] = _cat_zeros(value, dim, pad_n)
    vector = batch.batch
    store['batch'] = torch.cat(
        [vector, vector.new_full((pad_n, ), batch.num_graphs)])
    mask = torch.zeros(num_nodes, dtype=torch.bool, device=vector.device)
    mask[:nodes] = True
    store['node_mask'] = mask
    if 'num_nodes' in store:
        store.num_nodes = num_nodes
    return out


def _cat_zeros(value: Tensor, dim: int, count: int) -> Tensor:
    shape = list(value.shape)
    shape[dim] = count
    return torch.cat([value, value.new_zeros(shape)], dim=dim)


class PaddedLoader:
    r"""Wraps a graph loader so that every batch is padded (with
    :func:`pad_batch`) to a node count that is a multiple of
    :obj:`node_step` and an edge count that is a multiple of
    :obj:`edge_step`: batches of similar size share one shape, and a
    compiled or CUDA-graph-captured step is recorded once per shape.

    Args:
        loader: an iterable of PyG mini-batches (e.g.
            :class:`~pyg_hma.loader.DeviceGraphLoader`).
        node_step (int, optional): node budgets are multiples of this.
            (default: :obj:`128`)
        edge_step (int, optional): edge budgets are multiples of this.
            (default: :obj:`256`)
    """
    def __init__(self, loader, node_step: int = 128, edge_step: int = 256):
        if node_step < 1 or edge_step < 1:
            raise ValueError(f'node_step and edge_step must be positive (got '
                             f'{node_step}, {edge_step})')
        self.loader = loader
        self.node_step = node_step
        self.edge_step = edge_step

    def budget(self, batch: Batch) -> Tuple[int, int]:
        r"""The padded ``(num_nodes, num_edges)`` of :obj:`batch`."""
        nodes, edges = batch_sizes(batch)
        return (_round_up(nodes + 1, self.node_step),
                _round_up(max(edges, 1), self.edge_step))

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield pad_batch(batch, *self.budget(batch))

    def __len__(self) -> int:
        return len(self.loader)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.loader!r}, node_step='
                f'{self.node_step}, edge_step={self.edge_step})')

