from .classifier import HMAClassifier
from .hma_readout import HMAReadout
from .momentum import MomentumEncoder
from .utils import MaskedAttentionBlock, gather_from_all_ranks

__all__ = [
    'HMAReadout',
    'MomentumEncoder',
    'HMAClassifier',
    'MaskedAttentionBlock',
    'gather_from_all_ranks',
]
