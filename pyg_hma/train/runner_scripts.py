r"""The benchmark runner scripts as modules.

Each runner (``benchmarks/ood.py``, ``ogb_mol.py``, ``tu_id.py``) holds the
protocols of its datasets in a table ``PROTOCOLS``: the one place where a
dataset's backbone, HMA settings and optimisation protocol are written.
Tools that need them (the sweeps, ``benchmarks/speed.py``) import the
runner script by name with :func:`load_runner` rather than copy them.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Optional, Tuple

from ..registry import UnknownNameError

#: The runner scripts, in ``benchmarks/``.
RUNNERS = ('ood', 'ogb_mol', 'tu_id')

_LOADED: Dict[Path, ModuleType] = {}  # one import per script file


def load_runner(name: str,
                folder: Optional[os.PathLike] = None) -> ModuleType:
    r"""The runner module ``NAME.py`` (one of :data:`RUNNERS`), imported once
    per process.

    Args:
        name: the runner's name, e.g. ``'ood'``.
        folder: the folder holding the runner scripts (default:
            ``benchmarks/`` under the working directory, the root of a
            checkout).
    """
    if name not in RUNNERS:
        raise UnknownNameError(f"unknown runner '{name}'; choose from "
                               f"{', '.join(RUNNERS)}")
    folder = Path(folder) if folder is not None else Path.cwd() / 'benchmarks'
    path = (folder / f'{name}.py').resolve()
    if path not in _LOADED:
        if not path.is_file():
            raise FileNotFoundError(
                f"runner {path} not found: run from the root of a checkout "
                f"of the project")
        spec = importlib.util.spec_from_file_location(
            f'pyg_hma_runner_{name}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[path] = module
    return _LOADED[path]


def runner_protocols(folder: Optional[os.PathLike] = None
                     ) -> Dict[str, Tuple[str, Any]]:
    r"""Every dataset of every runner, as ``{dataset: (runner, protocol)}``
    (see :func:`load_runner` for :obj:`folder`)."""
    return {dataset: (name, protocol) for name in RUNNERS
            for dataset, protocol in load_runner(name, folder)
            .PROTOCOLS.items()}
