r"""A dataset cut into the splits of its benchmark protocol: what every
loader returns and every runner reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


@dataclass
class DatasetSplits:
    """A dataset cut into the splits of its benchmark protocol.

    Attributes:
        name: the dataset's name as the runners spell it.
        train, val: sequences of samples (PyG ``Data`` for graphs, a
            ``TensorDataset``-like for images).
        test: one test split, or a ``dict`` of named test splits
            (e.g. Colored MNIST's ``'reversed'`` and ``'gray'``).
        num_features: input feature size (node features for graphs).
        num_classes: number of classes (``2`` for binary tasks).
        metric: ``'mcc'``, ``'accuracy'`` or ``'rocauc'``.
        task: ``'graph'`` or ``'image'``.
        num_edge_features: edge feature size (0 when none; OGB molecules use
            integer bond features read by ``BondEncoder``).
        info: statistics, thresholds and provenance printed by ``prepare``.
    """
    name: str
    train: Any
    val: Any
    test: Any
    num_features: int
    num_classes: int
    metric: str
    task: str = 'graph'
    num_edge_features: int = 0
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def tests(self) -> Dict[str, Any]:
        return self.test if isinstance(self.test, dict) else {'test': self.test}

    @property
    def num_tasks(self) -> int:
        r"""Labels per sample (1 for single-label classification; OGB's
        multi-task molecule sets have more)."""
        sample = self.train[0]
        y = sample[1] if isinstance(sample, (tuple, list)) else sample.y
        return int(y.numel())

    @property
    def input_shape(self) -> Optional[Tuple[int, ...]]:
        r"""The shape of one image (``task == 'image'``), else ``None``."""
        if self.task != 'image':
            return None
        return tuple(int(s) for s in self.train[0][0].shape)

    def sizes(self) -> Dict[str, int]:
        out = {'train': len(self.train), 'val': len(self.val)}
        for key, split in self.tests.items():
            out[key] = len(split)
        return out
