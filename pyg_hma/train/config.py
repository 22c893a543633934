r"""The optimisation protocol of a run (:class:`TrainConfig`) and the eval
modes it can score under (:data:`EVAL_MODES`); re-exported by
:mod:`pyg_hma.train.engine`."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .._checks import check_field_types

#: How a run scores its validation and test splits (``TrainConfig.eval_mode``).
#: With HMA's attention across datapoints (``inference="batch"``) a sample's
#: eval logits depend on which samples share its batch; raw files sorted by
#: label (NCI1) then give nearly single-class batches in dataset order.
EVAL_MODES = ('independent', 'shuffled', 'order')


@dataclass
class TrainConfig:
    r"""Optimisation protocol of one run.

    Args:
        epochs: maximum number of epochs.
        batch_size: training batch size.
        eval_batch_size: evaluation batch size (default: :obj:`batch_size`;
            HMA's ``"batch"`` inference attends across the eval batch, so the
            paper's protocol evaluates with the training batch size).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_step: decay the learning rate by :obj:`lr_gamma` every
            :obj:`lr_step` epochs (``None``: constant).
        lr_gamma: the decay factor.
        clip_grad_norm: clip the gradient norm to this value (``None``: off).
        patience: early-stopping patience in epochs (``None``: off).
        warmup: epochs before the patience starts counting.
        loss: ``'ce'`` or ``'bce'`` (see
            :class:`~pyg_hma.methods.Criterion`).
        eval_mode: how validation and test splits are scored (see
            :data:`EVAL_MODES`): ``'independent'`` (default: every sample's
            prediction depends on that sample alone; HMA readouts attend
            across datapoints only in training), ``'shuffled'`` (HMA's
            ``inference="batch"``, eval batches drawn in a fixed random order
            per run) or ``'order'`` (``inference="batch"``, batches in
            dataset order: the paper's released code). Models whose
            predictions do not depend on the batch score the same in all
            three.

    A method's own hyperparameters (IRM's penalty weight, DropEdge's ratio,
    ...) are not here: see :func:`pyg_hma.methods.method_hyperparameters`.
    """
    epochs: int = 100
    batch_size: int = 32
    eval_batch_size: Optional[int] = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step: Optional[int] = None
    lr_gamma: float = 0.5
    clip_grad_norm: Optional[float] = None
    patience: Optional[int] = None
    warmup: int = 0
    loss: str = 'ce'
    eval_mode: str = 'independent'

    def __post_init__(self):
        check_field_types(self)  # types first: values are compared
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f'lr must be a positive number (got {self.lr})')
        if self.weight_decay < 0 or (self.clip_grad_norm is not None
                                     and not self.clip_grad_norm > 0):
            raise ValueError(f'weight_decay must be >= 0 and clip_grad_norm '
                             f'> 0 or None (got {self.weight_decay}, '
                             f'{self.clip_grad_norm})')
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f'epochs and batch_size must be positive (got '
                             f'{self.epochs}, {self.batch_size})')
        if self.patience is not None and self.patience < 1:
            raise ValueError(f'patience must be >= 1 or None (got '
                             f'{self.patience})')
        if self.loss not in ('ce', 'bce'):
            raise ValueError(f"loss must be 'ce' or 'bce' (got '{self.loss}')")
        if self.eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES} (got "
                             f"'{self.eval_mode}')")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


__all__ = ['TrainConfig', 'EVAL_MODES']
