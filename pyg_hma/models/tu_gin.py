r"""The GIN of G-Mixup (Han et al., 2022) for the TU in-distribution table."""
from __future__ import annotations

from typing import Dict

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GINConv, global_mean_pool

from ..nn.stacked import linear, scale_rows, seed_batch_norm
from .backbones import BACKBONES, BackboneSpec
from .union import StackedEncoder, UnionBatch


class GMixupGIN(StackedEncoder):
    r"""G-Mixup's 5-layer GIN (``src/models.py``): each layer is
    ``GINConv(Linear-ReLU-Linear) -> ReLU -> BatchNorm``, then mean pooling
    and ``Linear -> ReLU``. G-Mixup's final ``Linear`` to the classes is the
    head that :func:`~pyg_hma.models.build_model` attaches, so this module
    returns the :math:`(B, \text{hidden})` embeddings in front of it.

    Args:
        in_channels (int): node feature size.
        hidden_channels (int, optional): embedding size. (default: :obj:`64`)
        num_layers (int, optional): GIN layers. (default: :obj:`5`)

    Shapes:
        - **input:** a PyG batch with :obj:`x`, :obj:`edge_index`,
          :obj:`batch`
        - **output:** :math:`(B, \text{hidden\_channels})`
    """
    def __init__(self, in_channels: int, hidden_channels: int = 64,
                 num_layers: int = 5):
        super().__init__()
        if in_channels < 1 or hidden_channels < 1 or num_layers < 1:
            raise ValueError(
                f"GMixupGIN needs positive sizes (got in_channels="
                f"{in_channels}, hidden_channels={hidden_channels}, "
                f"num_layers={num_layers})")
        self.in_channels = in_channels
        self.hidden_channels = self.out_channels = hidden_channels
        self.num_layers = num_layers
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(num_layers):
            dim_in = in_channels if i == 0 else hidden_channels
            mlp = nn.Sequential(nn.Linear(dim_in, hidden_channels), nn.ReLU(),
                                nn.Linear(hidden_channels, hidden_channels))
            self.convs.append(GINConv(mlp))
            self.norms.append(nn.BatchNorm1d(hidden_channels))
        self.lin = nn.Linear(hidden_channels, hidden_channels)

    def reset_parameters(self):
        for conv, norm in zip(self.convs, self.norms):
            conv.reset_parameters()
            norm.reset_parameters()
        self.lin.reset_parameters()

    def forward_stacked(self, P: Dict[str, Tensor], pre: str,
                        data: UnionBatch, noise, training: bool) -> Tensor:
        r"""Embeddings ``[S, B, hidden]`` (after its ``Linear -> ReLU``) of
        every seed's batch in the union :obj:`data`. Each layer is PyG's
        ``GINConv`` (the sum of the neighbours' rows plus
        :math:`(1 + \epsilon)` times the node's own row, then ``Linear ->
        ReLU -> Linear``), ReLU, and a BatchNorm per seed over its real
        nodes; then mean pooling per graph."""
        S, N, B = data.S, data.size, data.B
        x = data.x
        if not x.is_floating_point():
            x = x.float()
        h = x.reshape(S, N, -1)
        for i in range(self.num_layers):
            c = f'{pre}convs.{i}.'
            d = h.size(-1)
            out = data.aggregate(h.reshape(S * N, d), 'sum')
            z = out.view(S, N, d) + scale_rows(h, 1 + P[c + 'eps'],
                                                data.rows)
            z = F.relu(linear(z, P[c + 'nn.0.weight'], P[c + 'nn.0.bias'],
                              data.rows))
            z = linear(z, P[c + 'nn.2.weight'], P[c + 'nn.2.bias'],
                       data.rows)
            h = seed_batch_norm(F.relu(z), P, f'{pre}norms.{i}.',
                                self.norms[i], data.rows, training)
        d = h.size(-1)
        size = S * B
        pooled = global_mean_pool(h.reshape(S * N, d), data.batch, size + 1)
        pooled = pooled[:size].view(S, B, d)
        return F.relu(linear(pooled, P[pre + 'lin.weight'],
                             P[pre + 'lin.bias']))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.hidden_channels}, num_layers={self.num_layers})')


BACKBONES.register(BackboneSpec('gin-gmixup', GMixupGIN, 'GIN'))
