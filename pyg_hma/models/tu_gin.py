r"""The GIN of G-Mixup (Han et al., 2022) for the TU in-distribution table."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GINConv, global_mean_pool

from .gnn import graph_batch_info
from .backbones import BACKBONES, BackboneSpec


class GMixupGIN(nn.Module):
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

    def forward(self, data) -> Tensor:
        x, edge_index = data.x, data.edge_index
        if not x.is_floating_point():
            x = x.float()
        batch, num_graphs = graph_batch_info(data)
        for conv, norm in zip(self.convs, self.norms):
            x = norm(F.relu(conv(x, edge_index)))
        x = global_mean_pool(x, batch, num_graphs)
        return F.relu(self.lin(x))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.hidden_channels}, num_layers={self.num_layers})')


BACKBONES.register(BackboneSpec('gin-gmixup', GMixupGIN, 'GIN'))
