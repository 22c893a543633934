"""Input encoders for OGB molecule graphs.

Equivalent to :class:`ogb.graphproppred.mol_encoder.AtomEncoder` and
``BondEncoder`` (one embedding table per integer feature column, summed,
Xavier-uniform initialised), written out here so that the models import
without :mod:`ogb` (e.g. on a GPU machine that only has torch and PyG).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

# ogb.utils.features.get_atom_feature_dims() / get_bond_feature_dims() of
# ogb 1.3.x: the vocabulary size of every column of `x` and `edge_attr`.
ATOM_FEATURE_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)
BOND_FEATURE_DIMS = (5, 6, 2)


class _SumOfEmbeddings(nn.Module):
    def __init__(self, emb_dim: int, dims: Sequence[int]):
        super().__init__()
        self.dims = tuple(dims)
        self.embeddings = nn.ModuleList(nn.Embedding(d, emb_dim) for d in dims)
        self.reset_parameters()

    def reset_parameters(self):
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) > len(self.embeddings):
            raise ValueError(
                f"{self.__class__.__name__} expected integer features of "
                f"shape [N, <={len(self.embeddings)}], got {list(x.shape)}")
        out = self.embeddings[0](x[:, 0])
        for i in range(1, x.size(1)):
            out = out + self.embeddings[i](x[:, i])
        return out


class AtomEncoder(_SumOfEmbeddings):
    r"""Embeds OGB's 9 integer atom features into :obj:`emb_dim` dims."""
    def __init__(self, emb_dim: int):
        super().__init__(emb_dim, ATOM_FEATURE_DIMS)


class BondEncoder(_SumOfEmbeddings):
    r"""Embeds OGB's 3 integer bond features into :obj:`emb_dim` dims."""
    def __init__(self, emb_dim: int):
        super().__init__(emb_dim, BOND_FEATURE_DIMS)


__all__ = ['AtomEncoder', 'BondEncoder', 'ATOM_FEATURE_DIMS',
           'BOND_FEATURE_DIMS']
