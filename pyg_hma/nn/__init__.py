from .classifier import HMAClassifier
from .hma_readout import HMAReadout
from .momentum import MomentumEncoder
from .reference_readout import ReferenceHMAReadout
from .utils import MaskedAttentionBlock, gather_from_all_ranks

__all__ = [
    'HMAReadout',
    'ReferenceHMAReadout',
    'MomentumEncoder',
    'HMAClassifier',
    'MaskedAttentionBlock',
    'gather_from_all_ranks',
]
