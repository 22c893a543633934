r"""The default protocol of a dataset: what a runner's ``PROTOCOLS`` table
holds."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..train.engine import TrainConfig


@dataclass
class DatasetProtocol:
    r"""The default protocol of one dataset.

    Args:
        train: the optimisation protocol.
        backbone: default backbone (a :obj:`pyg_hma.models.BACKBONES` name).
        table: the paper's table of this dataset (``None``: not in it).
        seeds: default number of seeds (``0 .. seeds-1``).
        methods: methods run when ``--method`` is not given.
        table_methods: the methods of the paper's table (``--method all``).
        backbone_kwargs: backbone arguments (hidden size, layers, ...).
        hma: :class:`~pyg_hma.HMAReadout` arguments (memory size, ...).
        method_hyperparameters: the methods' hyperparameters by name (e.g.
            IRM's ``penalty_weight``; see
            :func:`pyg_hma.methods.method_hyperparameters`), shared by all
            methods: each reads its own, the defaults for the rest.
        momentum: EMA momentum of HMA's key encoder (``None``: no key
            encoder, the online embeddings are written).
        dataset_kwargs: extra arguments of :func:`pyg_hma.data.load_dataset`.
        quick: ``--quick`` settings: ``epochs``, ``seeds``, ``train_size``,
            ``eval_size`` (subset sizes), ``backbone_kwargs`` (e.g. a smaller
            width) and any :class:`~pyg_hma.train.TrainConfig` field or
            method hyperparameter.
        note: a sentence on where the protocol comes from.
    """
    train: TrainConfig
    backbone: str
    table: Optional[int] = None
    seeds: int = 10
    methods: Tuple[str, ...] = ('erm', 'hma')
    table_methods: Tuple[str, ...] = ('erm', 'hma')
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    hma: Dict[str, Any] = field(default_factory=dict)
    method_hyperparameters: Dict[str, Any] = field(default_factory=dict)
    momentum: Optional[float] = 0.999
    dataset_kwargs: Dict[str, Any] = field(default_factory=dict)
    quick: Dict[str, Any] = field(default_factory=dict)
    note: str = ''

    def replace(self, **changes) -> 'DatasetProtocol':
        return dataclasses.replace(self, **changes)

    def quick_settings(self) -> Dict[str, Any]:
        r"""The ``--quick`` settings: :data:`QUICK_DEFAULTS` and the
        protocol's own."""
        return {**QUICK_DEFAULTS, **self.quick}


# Long enough to show learning (non-trivial scores) in well under a minute;
# a protocol's `quick` entries override these.
QUICK_DEFAULTS = dict(epochs=8, seeds=2, train_size=256, eval_size=128,
                      lr=1e-2)
QUICK_NOTE = ('(--quick: a smoke test on a data subset for a few epochs; its '
              'scores are not results)')
