r"""What a run saves after every epoch and resumes from, written once for
:func:`~pyg_hma.train.engine.fit` and :func:`~pyg_hma.train.seed_batch.fit_seeds`.

* :class:`Checkpointer`: the checkpoint file (atomic writes, loaded with
  ``weights_only=True``, refused under another fingerprint);
* :func:`checkpoint_fingerprint` (and :func:`fingerprint`,
  :func:`train_record`): the identity of a run's configuration;
* the Python/NumPy/torch RNG states as plain tensors;
* :class:`RunProgress`: one run's early-stopping state
  (:class:`BestTracker`), history, selected weights, time and skipped
  batches; it resumes from a checkpoint, records an epoch, builds the
  checkpoint's dictionary and the :class:`FitResult`;
* :func:`optimizer_and_scheduler`: the optimizer, its step schedule and the
  states they resume from.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch
from torch import Tensor, nn

from ..files import UnreadableFileError, atomic_torch_save, torch_load
from ..methods import recorded_hyperparameters
from .config import TrainConfig
from .results import ENGINE_VERSION

# 3: plain tensors and containers only (loaded with weights_only=True), and
# the selected model's state (best_state).
CHECKPOINT_VERSION = 3


class BestTracker:
    r"""Best-validation selection and early stopping.

    Args:
        patience: stop after this many epochs without a strict improvement
            (``None``: never stop early).
        warmup: epochs :math:`\le` :obj:`warmup` never count towards the
            patience.
    """
    def __init__(self, patience: Optional[int] = None, warmup: int = 0):
        self.patience = patience
        self.warmup = warmup
        self.best_epoch: Optional[int] = None
        self.best_val = -math.inf
        self.best_record: Optional[dict] = None
        self.bad_epochs = 0
        self.stopped = False

    def update(self, epoch: int, val: float, record: dict) -> bool:
        r"""Records epoch :obj:`epoch` (1-based) with validation score
        :obj:`val`; returns whether it is the new best. NaN never is."""
        improved = val > self.best_val
        if improved:
            self.best_epoch, self.best_val = epoch, val
            self.best_record = record
            self.bad_epochs = 0
        elif epoch > self.warmup:
            self.bad_epochs += 1
        if (self.patience is not None and epoch > self.warmup
                and self.bad_epochs >= self.patience):
            self.stopped = True
        return improved

    def state_dict(self) -> dict:
        return dict(best_epoch=self.best_epoch, best_val=self.best_val,
                    best_record=self.best_record, bad_epochs=self.bad_epochs,
                    stopped=self.stopped)

    def load_state_dict(self, state: dict):
        for key, value in state.items():
            setattr(self, key, value)



def _rng_state() -> dict:
    # Tensors and plain values only, so that a checkpoint loads with
    # torch.load(weights_only=True).
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        'python': {'version': version, 'gauss': gauss,
                   'internal': torch.tensor(internal, dtype=torch.long)},
        'numpy': {'kind': kind, 'pos': int(pos), 'has_gauss': int(has_gauss),
                  'cached_gaussian': float(cached),
                  'keys': torch.from_numpy(keys.astype(np.int64))},
        'torch': torch.get_rng_state(),
        'cuda': (torch.cuda.get_rng_state_all()
                 if torch.cuda.is_available() else None),
    }


def _set_rng_state(state: dict):
    py = state['python']
    random.setstate((py['version'], tuple(py['internal'].tolist()),
                     py['gauss']))
    npy = state['numpy']
    np.random.set_state((npy['kind'], npy['keys'].numpy().astype(np.uint32),
                         npy['pos'], npy['has_gauss'],
                         npy['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if state.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])



def fingerprint(obj: Any) -> str:
    r"""A short stable hash of a JSON-serialisable description of a run."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_record(cfg: 'TrainConfig',
                 hyperparameters: Optional[Mapping[str, Any]] = None
                 ) -> Dict[str, Any]:
    r"""The ``train`` entry of a run's result record and fingerprints:
    :obj:`cfg`'s fields and the method hyperparameters
    (:func:`~pyg_hma.methods.recorded_hyperparameters` of
    :obj:`hyperparameters`) in the key order of the :class:`TrainConfig`
    that held them before ``eval_mode``, so the records and fingerprints of
    existing configurations are unchanged."""
    fields = cfg.to_dict()
    eval_mode = fields.pop('eval_mode')
    return {**fields, **recorded_hyperparameters(hyperparameters or {}),
            'eval_mode': eval_mode}


def checkpoint_fingerprint(method: str, seed: int, cfg: 'TrainConfig',
                           run_id: Optional[dict] = None,
                           compare_eval_modes: bool = False,
                           seed_batch: Optional[Union[int, str]] = None,
                           hyperparameters: Optional[Mapping[str, Any]] = None
                           ) -> str:
    r"""The fingerprint :func:`fit` (or, with :obj:`seed_batch` the
    seed-batched streams' version, :func:`~.seed_batch.fit_seeds`) writes
    into and requires of a run's checkpoint; :obj:`hyperparameters`: the
    method hyperparameters (see :func:`train_record`)."""
    described = {'method': method, 'seed': seed,
                 'cfg': train_record(cfg, hyperparameters),
                 'run': run_id or {}}
    if seed_batch is not None:
        described['seed_batch'] = seed_batch
    if compare_eval_modes:  # the history holds more: not resumable across
        described['compare_eval_modes'] = True
    return fingerprint(described)



class Checkpointer:
    r"""The run's checkpoint file: written atomically after every epoch,
    read back with ``weights_only=True`` on resume, and refused when it was
    written by another run configuration (:obj:`fingerprint`), format or
    engine version (:data:`~pyg_hma.train.results.ENGINE_VERSION`).

    Args:
        path: the checkpoint file (``None``: no checkpoints).
        fingerprint: identifies the run configuration.
        writes: ``False``: only read it (the ranks of a distributed run
            other than rank 0).
    """
    def __init__(self, path: Optional[os.PathLike], fingerprint: str,
                 writes: bool = True):
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint
        self.writes = writes

    def load(self) -> Optional[dict]:
        r"""The saved state, or ``None`` when there is no checkpoint."""
        if self.path is None or not self.path.is_file():
            return None
        try:  # weights_only=True: a planted checkpoint cannot run code
            state = torch_load(self.path, what='checkpoint')
        except UnreadableFileError as e:
            raise ValueError(
                f"Cannot resume from checkpoint '{self.path}': {e.reason}. "
                f"Delete it or run without --resume to start over") from None
        if not isinstance(state, dict) or \
                state.get('version') != CHECKPOINT_VERSION or \
                state.get('fingerprint') != self.fingerprint:
            raise ValueError(
                f"Checkpoint '{self.path}' was written by a different run "
                f"configuration (or format); delete it or run without "
                f"--resume to start over")
        # Checkpoints from before the engine was recorded carry none.
        engine = state.get('engine', ENGINE_VERSION)
        if engine != ENGINE_VERSION:
            raise ValueError(
                f"Checkpoint '{self.path}' was written by engine version "
                f"{engine} and this code is version {ENGINE_VERSION}: the run "
                f"would mix two engines; finish it with the code of version "
                f"{engine}, or delete it to start over")
        return state

    def save(self, state: dict):
        if self.path is not None and self.writes:
            atomic_torch_save({'version': CHECKPOINT_VERSION,
                               'fingerprint': self.fingerprint,
                               'engine': ENGINE_VERSION, **state},
                              self.path)



@dataclass
class FitResult:
    r"""Outcome of :func:`fit`.

    :obj:`best_state` is the model's ``state_dict`` (on the CPU) after the
    selected epoch: load it with ``model.load_state_dict(res.best_state)``
    to use or re-score the selected model."""
    history: List[dict]
    selected_epoch: Optional[int]
    val: float
    test: Dict[str, float]
    epochs_run: int
    stopped_early: bool
    wall_time_s: float
    skipped_batches: int
    num_parameters: int
    resumed_from: Optional[int] = None
    best_state: Optional[Dict[str, Tensor]] = field(default=None, repr=False)
    extra: Dict[str, Any] = field(default_factory=dict)



def _state_copy(model: nn.Module) -> Dict[str, Tensor]:
    return {k: v.detach().to('cpu', copy=True)
            for k, v in model.state_dict().items()}




class RunProgress:
    r"""Where one run stands, and what its checkpoint holds besides the
    weights: the early-stopping state (:attr:`tracker`), the
    :attr:`history` of epoch records, the selected weights
    (:attr:`best_state`), the training time, the skipped batches, the next
    epoch, and the optimizer's and scheduler's states it resumed from.

    :func:`~pyg_hma.train.engine.fit` keeps one for its run,
    :func:`~pyg_hma.train.seed_batch.fit_seeds` one per seed.

    Args:
        cfg: the run's protocol (its patience and warm-up).
    """
    def __init__(self, cfg: TrainConfig):
        self.tracker = BestTracker(cfg.patience, cfg.warmup)
        self.history: List[dict] = []
        self.best_state: Optional[Dict[str, Tensor]] = None
        self.elapsed, self.skipped = 0.0, 0
        self.resumed_from: Optional[int] = None
        self.next_epoch = 1
        self.optimizer_state: Optional[dict] = None
        self.scheduler_state: Optional[dict] = None

    def resume(self, state: Optional[dict], model: nn.Module) -> bool:
        r"""Continues from :obj:`state` (a :meth:`Checkpointer.load`,
        ``None``: nothing to resume): loads the weights into :obj:`model`
        and keeps the rest. Returns whether it resumed."""
        if state is None:
            return False
        model.load_state_dict(state['model'])
        self.optimizer_state = state['optimizer']
        self.scheduler_state = state['scheduler']
        self.tracker.load_state_dict(state['tracker'])
        self.history, self.best_state = state['history'], state['best_state']
        self.elapsed, self.skipped = state['elapsed'], state['skipped_batches']
        self.next_epoch = self.resumed_from = state['epoch'] + 1
        return True

    def record(self, rec: dict, model: nn.Module):
        r"""Adds the record :obj:`rec` of an epoch (its ``time_s`` to the
        training time) and keeps a copy of :obj:`model`'s weights when the
        epoch is the new best."""
        self.elapsed += rec['time_s']
        self.history.append(rec)
        if self.tracker.update(rec['epoch'], rec['val'], rec):
            self.best_state = _state_copy(model)
        self.next_epoch = rec['epoch'] + 1

    def checkpoint(self, epoch: int, model: nn.Module,
                   optimizer_state: dict, scheduler_state: Optional[dict],
                   rng: dict) -> dict:
        r"""The checkpoint after epoch :obj:`epoch` (what
        :meth:`Checkpointer.save` writes and :meth:`resume` reads)."""
        return {'epoch': epoch, 'model': model.state_dict(),
                'optimizer': optimizer_state, 'scheduler': scheduler_state,
                'tracker': self.tracker.state_dict(),
                'history': self.history, 'best_state': self.best_state,
                'elapsed': self.elapsed, 'skipped_batches': self.skipped,
                'rng': rng}

    def result(self, model: nn.Module, num_parameters: int,
               extra: Optional[Dict[str, Any]] = None) -> FitResult:
        r"""The run's :class:`FitResult`; :obj:`model` holds its last
        weights."""
        best, selected = self.tracker.best_record, self.tracker.best_epoch
        best_state = self.best_state
        if best is None and self.history:
            # No finite validation score at all (e.g. ROC-AUC on a one-class
            # subset): report the last epoch, and its model, rather than
            # nothing.
            best, selected = self.history[-1], self.history[-1]['epoch']
            best_state = _state_copy(model)
        best = best or {}
        return FitResult(
            history=self.history, selected_epoch=selected,
            val=best.get('val', float('nan')),
            test=dict(best.get('test', {})), epochs_run=len(self.history),
            stopped_early=self.tracker.stopped, wall_time_s=self.elapsed,
            skipped_batches=self.skipped, num_parameters=num_parameters,
            resumed_from=self.resumed_from, best_state=best_state,
            extra=dict(extra or {}))


def optimizer_and_scheduler(
        make: Callable[..., torch.optim.Optimizer], params: Sequence[Tensor],
        cfg: TrainConfig, state: Optional[dict] = None,
        scheduler_state: Optional[dict] = None
) -> Tuple[torch.optim.Optimizer,
           Optional[torch.optim.lr_scheduler.StepLR]]:
    r"""The optimizer ``make(params, lr=, weight_decay=)`` of :obj:`cfg`,
    its :class:`~torch.optim.lr_scheduler.StepLR` (``None`` without
    ``cfg.lr_step``), and both loaded from :obj:`state` and
    :obj:`scheduler_state` when resuming (:obj:`state` not ``None``)."""
    optimizer = make(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
                 if cfg.lr_step else None)
    if state is not None:
        optimizer.load_state_dict(state)
        if scheduler is not None:
            scheduler.load_state_dict(scheduler_state)
    return optimizer, scheduler


def step_scheduler(optimizer: torch.optim.Optimizer, scheduler) -> float:
    r"""Ends an epoch: steps :obj:`scheduler` (when not ``None``) and
    returns the learning rate the epoch trained with."""
    if scheduler is not None:
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
    else:
        lr = optimizer.param_groups[0]['lr']
    return lr


__all__ = ['CHECKPOINT_VERSION', 'Checkpointer', 'checkpoint_fingerprint',
           'fingerprint', 'train_record', 'BestTracker', 'FitResult',
           'RunProgress', 'optimizer_and_scheduler', 'step_scheduler']
