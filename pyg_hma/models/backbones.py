r"""The backbone registry: each backbone class registers its names where it
is defined (``gnn.py``, ``tu_gin.py``, ``mnist.py``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

from ..registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    r"""One backbone of the benchmarks.

    Args:
        name: the command-line name (``'gin-v'``).
        cls: the module class; called as ``cls(num_features, **fixed,
            **kwargs)`` for graphs, ``cls(input_shape, **kwargs)`` for
            images.
        label: the paper's spelling in tables (``'GIN-v'``).
        fixed: keyword arguments this name fixes (``conv='gin'``,
            ``virtual_node=True``).
        inputs: ``'graph'`` or ``'image'``.
    """
    name: str
    cls: type
    label: str
    fixed: Dict[str, Any] = field(default_factory=dict)
    inputs: str = 'graph'

    @property
    def supports_padding(self) -> bool:
        r"""Whether padded static-shape batches give unpadded results."""
        return bool(getattr(self.cls, 'supports_padding', False))


BACKBONES: Registry[BackboneSpec] = Registry('backbone')


def backbone_label(backbone: str, pooling: str = None) -> str:
    r"""The table label (``'GIN (max pool)'`` for max pooling); unknown
    names label themselves."""
    spec = BACKBONES.get(backbone)
    label = spec.label if spec is not None else backbone
    return f'{label} ({pooling} pool)' if pooling == 'max' else label
