r"""The methods of the benchmarks: one registry entry each.

A method is a :class:`MethodSpec`: its name and table label, the head it
trains (a linear head, or an :class:`~pyg_hma.HMAReadout` with some of its
parts switched on), its training objective (:mod:`.objectives`), whether it
edits the graphs of a batch, and which :class:`~pyg_hma.train.TrainConfig`
fields it reads. :func:`pyg_hma.models.build_model`, the engine, the
results and the runners' command line all read :data:`METHODS`; adding a
method is one :func:`METHODS.register <pyg_hma.registry.Registry.register>`
call plus its objective (see ``docs/extending.md``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..registry import Registry, UnknownNameError
from .objectives import (IRM, Criterion, DropEdge, DropNode, ManifoldMixup,
                         Objective, StepContext, VREx)


@dataclass(frozen=True)
class MethodSpec:
    r"""One method of the benchmarks.

    Args:
        name: the command-line name (``'hma'``, ``'irm'``, ...).
        label: the paper's spelling in tables (``'HMA'``, ``'V-REx'``).
        objective: computes ``(loss, logits, extras)`` for a batch.
        hma: ``None`` for a linear head; else the
            :class:`~pyg_hma.HMAReadout` switches (``rma``, ``abd``,
            ``synthetic``) of this variant.
        edits_graphs: the objective rebuilds the graphs of each batch
            (so padded static-shape batches cannot be used).
        hyperparameters: the :class:`~pyg_hma.train.TrainConfig` fields the
            objective reads (documentation and sweeps).
    """
    name: str
    label: str
    objective: Objective
    hma: Optional[Dict[str, bool]] = None
    edits_graphs: bool = False
    hyperparameters: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def uses_hma(self) -> bool:
        return self.hma is not None


METHODS: Registry[MethodSpec] = Registry('method')

_ERM = Objective()
_PENALTY = ('penalty_weight', 'penalty_anneal_epochs')
for _spec in (
    MethodSpec('erm', 'ERM', _ERM),
    MethodSpec('irm', 'IRM', IRM(), hyperparameters=_PENALTY),
    MethodSpec('vrex', 'V-REx', VREx(), hyperparameters=_PENALTY),
    MethodSpec('dropedge', 'DropEdge', DropEdge(), edits_graphs=True,
               hyperparameters=('drop_ratio', )),
    MethodSpec('dropnode', 'DropNode', DropNode(), edits_graphs=True,
               hyperparameters=('drop_ratio', )),
    MethodSpec('mmixup', 'M-Mixup', ManifoldMixup(),
               hyperparameters=('mixup_alpha', )),
    # The paper's ablations: which parts of the HMA readout each one keeps.
    MethodSpec('rma', 'RMA', _ERM,
               hma=dict(rma=True, abd=False, synthetic=False)),
    MethodSpec('abd', 'ABD', _ERM,
               hma=dict(rma=False, abd=True, synthetic=False)),
    MethodSpec('abd+syn', 'ABD+SYN', _ERM,
               hma=dict(rma=False, abd=True, synthetic=True)),
    MethodSpec('abd+rma', 'ABD+RMA', _ERM,
               hma=dict(rma=True, abd=True, synthetic=False)),
    MethodSpec('hma', 'HMA', _ERM,
               hma=dict(rma=True, abd=True, synthetic=True)),
):
    METHODS.register(_spec)


def method_label(method: str) -> str:
    r"""The table label of :obj:`method` (the name itself when unknown)."""
    spec = METHODS.get(method)
    return spec.label if spec is not None else method


__all__ = [
    'METHODS',
    'MethodSpec',
    'UnknownNameError',
    'method_label',
    'Criterion',
    'StepContext',
    'Objective',
    'IRM',
    'VREx',
    'DropEdge',
    'DropNode',
    'ManifoldMixup',
]
