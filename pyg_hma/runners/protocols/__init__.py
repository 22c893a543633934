r"""The runners' dataset protocols, as package data.

Each runner (``ood``, ``ogb_mol``, ``tu_id``) is a module here holding the
protocols of its datasets in a table ``PROTOCOLS``: the one place where a
dataset's backbone, HMA settings and optimisation protocol are written
(with the sources they follow in the module's docstring), and its command
line (``main``). ``benchmarks/NAME.py`` are short wrappers around them, and
an installed wheel runs them without a checkout::

    python -m pyg_hma.runners.protocols.ood --dataset NCI1

Tools that need the protocols (the sweeps, ``benchmarks/speed.py``, the
reproduction report) read them from here with :func:`runner_module` and
:func:`runner_protocols`.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Dict, Tuple

from ...registry import UnknownNameError
from . import ogb_mol, ood, tu_id

#: The runners, by name.
RUNNER_MODULES: Dict[str, ModuleType] = {
    'ood': ood, 'ogb_mol': ogb_mol, 'tu_id': tu_id}
#: The runners' names.
RUNNERS = tuple(RUNNER_MODULES)


def runner_module(name: str) -> ModuleType:
    r"""The runner module :obj:`name` (one of :data:`RUNNERS`): its
    ``PROTOCOLS``, ``main`` and docstring. Raises
    :class:`~pyg_hma.registry.UnknownNameError` for another name."""
    if name not in RUNNER_MODULES:
        raise UnknownNameError(f"unknown runner '{name}'; choose from "
                               f"{', '.join(RUNNERS)}")
    return RUNNER_MODULES[name]


def runner_protocols() -> Dict[str, Tuple[str, Any]]:
    r"""Every dataset of every runner, as ``{dataset: (runner,
    protocol)}``."""
    return {dataset: (name, protocol)
            for name, module in RUNNER_MODULES.items()
            for dataset, protocol in module.PROTOCOLS.items()}


__all__ = ['RUNNERS', 'RUNNER_MODULES', 'runner_module', 'runner_protocols']
