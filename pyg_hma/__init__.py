"""pyg_hma: Heterogeneous Memory Augmentation for PyTorch Geometric."""
from .nn import HMAClassifier, HMAReadout, MomentumEncoder

__version__ = '0.1.0'

__all__ = ['HMAReadout', 'MomentumEncoder', 'HMAClassifier', '__version__']
