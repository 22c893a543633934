r"""The methods of the benchmarks: one registry entry each.

A method is a :class:`MethodSpec`: its name and table label, the head it
trains (a linear head, or an :class:`~pyg_hma.HMAReadout` with some of its
parts switched on), its training objective (:mod:`.objectives`) with the
objective's typed hyperparameters, and whether it edits the graphs of a
batch. :func:`pyg_hma.models.build_model`, the engine, the
results and the runners' command line all read :data:`METHODS`; adding a
method is one :func:`METHODS.register <pyg_hma.registry.Registry.register>`
call plus its objective (see ``docs/extending.md``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Type

from ..registry import Registry, UnknownNameError
from .objectives import (IRM, Criterion, DropEdge, DropHyperparameters,
                         DropNode, Hyperparameters, ManifoldMixup,
                         MixupHyperparameters, Objective,
                         PenaltyHyperparameters, StepContext, VREx)


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
    """
    name: str
    label: str
    objective: Objective
    hma: Optional[Dict[str, bool]] = None
    edits_graphs: bool = False

    @property
    def uses_hma(self) -> bool:
        return self.hma is not None

    @property
    def hyperparameters(self) -> Type[Hyperparameters]:
        r"""The class of the objective's hyperparameters."""
        return self.objective.hyperparameters


METHODS: Registry[MethodSpec] = Registry('method')

_ERM = Objective()
for _spec in (
    MethodSpec('erm', 'ERM', _ERM),
    MethodSpec('irm', 'IRM', IRM()),
    MethodSpec('vrex', 'V-REx', VREx()),
    MethodSpec('dropedge', 'DropEdge', DropEdge(), edits_graphs=True),
    MethodSpec('dropnode', 'DropNode', DropNode(), edits_graphs=True),
    MethodSpec('mmixup', 'M-Mixup', ManifoldMixup()),
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


def method_hyperparameters(method: str, settings: Mapping[str, Any]
                           ) -> Hyperparameters:
    r"""The typed hyperparameters of :obj:`method`: those named in
    :obj:`settings` (a flat ``{name: value}`` shared by all methods; names
    of other methods' hyperparameters are ignored), the defaults for the
    rest. Raises :class:`TypeError` / :class:`ValueError` for a bad
    value."""
    return METHODS[method].hyperparameters.from_settings(settings)


def hyperparameter_names() -> List[str]:
    r"""The names of every registered method's hyperparameters (what
    ``--set method.NAME`` accepts), in registration order."""
    names: Dict[str, None] = {}
    for method in METHODS:
        for f in dataclasses.fields(METHODS[method].hyperparameters):
            names[f.name] = None
    return list(names)


#: The hyperparameters every run records (``config['train']`` of a result
#: and the fingerprints), whatever its method, with their defaults when
#: unset: they were fields of :class:`~pyg_hma.train.TrainConfig`, so
#: existing records hold them. A new method's hyperparameters are recorded
#: only when set (:func:`recorded_hyperparameters`).
ALWAYS_RECORDED = {f.name: f.default for cls in (
    PenaltyHyperparameters, DropHyperparameters, MixupHyperparameters)
    for f in dataclasses.fields(cls)}


def recorded_hyperparameters(settings: Mapping[str, Any]) -> Dict[str, Any]:
    r"""What a run records of the method hyperparameters :obj:`settings`:
    every name of :data:`ALWAYS_RECORDED` (its value in :obj:`settings`,
    else its default), then the other names set in :obj:`settings`."""
    return {**ALWAYS_RECORDED, **settings}


def method_label(method: str) -> str:
    r"""The table label of :obj:`method` (the name itself when unknown)."""
    spec = METHODS.get(method)
    return spec.label if spec is not None else method


__all__ = [
    'METHODS',
    'MethodSpec',
    'UnknownNameError',
    'method_label',
    'method_hyperparameters',
    'hyperparameter_names',
    'recorded_hyperparameters',
    'ALWAYS_RECORDED',
    'Criterion',
    'StepContext',
    'Objective',
    'Hyperparameters',
    'PenaltyHyperparameters',
    'DropHyperparameters',
    'MixupHyperparameters',
    'IRM',
    'VREx',
    'DropEdge',
    'DropNode',
    'ManifoldMixup',
]
