r"""The values every ``--set SECTION.NAME=VALUE`` setting may take: one
table (:data:`SETTING_CHECKS`) of range and choice checks, read before any
data is loaded, so that a value no run can take is one line naming the
setting and what it accepts instead of a traceback after loading.

Values that depend on each other (HMA's heads must divide the backbone's
width plus the label size) are checked by building the readout the run
would build, on a stand-in backbone (:func:`check_readout`).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Mapping, Optional

from ..models import BACKBONES, build_backbone
from ..models.gnn import POOLINGS
from ..nn import HMAReadout
from ..nn.hma_readout import _CHOICES, _HEADS, _INFERENCE, STYLES
from ..nn.utils import _ATTENTION_SCALES, _RESIDUALS
from ..train.engine import EVAL_MODES

#: A check: what is wrong with a value (``None``: nothing).
Check = Callable[[Any], Optional[str]]


def integer(low: int, why: str = '') -> Check:
    r"""An integer (no ``bool``) of at least :obj:`low`; :obj:`why` says
    what the number is."""
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) \
                or value < low:
            return f'must be an integer of at least {low}' + (
                f' ({why})' if why else '')
        return None
    return check


def number(low: float = -math.inf, high: float = math.inf, *,
           low_open: bool = False, high_open: bool = False,
           why: str = '') -> Check:
    r"""A finite number (no ``bool``) in the interval from :obj:`low` to
    :obj:`high`, each end closed unless :obj:`low_open` /
    :obj:`high_open`."""
    if math.isinf(high):
        where = (f'greater than {low:g}' if low_open
                 else f'at least {low:g}')
    else:
        where = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
                 f"{')' if high_open else ']'}")

    def check(value):
        ok = (not isinstance(value, bool) and isinstance(value, (int, float))
              and math.isfinite(value)
              and (value > low if low_open else value >= low)
              and (value < high if high_open else value <= high))
        return None if ok else f'must be a number {where}' + (
            f' ({why})' if why else '')
    return check


def choice(*values: str) -> Check:
    r"""One of :obj:`values`."""
    def check(value):
        if value not in values:
            return f"must be one of {', '.join(map(str, values))}"
        return None
    return check


def flag(value) -> Optional[str]:
    r"""``true`` or ``false``."""
    return None if isinstance(value, bool) else 'must be true or false'


def optional(check: Check) -> Check:
    r""":obj:`check`, or ``null`` (the default)."""
    def optional_check(value):
        if value is None:
            return None
        problem = check(value)
        return problem and problem + ', or null'
    return optional_check


_FRACTION = dict(low=0.0, high=1.0, high_open=True)

#: ``{section: {name: check}}``: every setting of the built-in backbones,
#: HMA readout, training configuration and methods. A setting missing here
#: (a method or backbone registered by an extension) is left to its class.
SETTING_CHECKS: Dict[str, Dict[str, Check]] = {
    'train': {
        'epochs': integer(1, 'a count of epochs'),
        'batch_size': integer(
            2, 'graphs per training batch: a batch of one graph is skipped, '
            'since BatchNorm over the graphs of a batch needs two'),
        'eval_batch_size': optional(integer(1, 'graphs per eval batch')),
        'lr': number(0.0, low_open=True, why='the learning rate'),
        'weight_decay': number(0.0),
        'lr_step': optional(integer(1, 'epochs between decays')),
        'lr_gamma': number(0.0, low_open=True, why='the decay factor'),
        'clip_grad_norm': optional(number(0.0, low_open=True)),
        'patience': optional(integer(1, 'epochs; null turns early stopping '
                                     'off')),
        'warmup': integer(0, 'epochs'),
        'loss': choice('ce', 'bce'),
        'eval_mode': choice(*EVAL_MODES),
    },
    'backbone': {
        'hidden_channels': integer(1, 'a width'),
        'num_layers': integer(1, 'a count of layers'),
        'channels': integer(1, 'a width'),
        'dropout': number(**_FRACTION, why='a probability'),
        'pooling': choice(*POOLINGS),
        'residual': flag,
        'atom_encoder': flag,
        'bond_encoder': flag,
    },
    'hma': {
        'memory_size': integer(1, "HMA's queue length"),
        'slots_per_class': integer(1, 'synthetic slots per class'),
        'label_dim': integer(1, 'the label embedding size'),
        'heads': integer(1, 'attention heads'),
        'dropout': number(**_FRACTION, why='a probability'),
        'inference': choice(*_INFERENCE),
        'style': choice(*STYLES),
        'head': optional(choice(*_HEADS)),
        'attention_scale': optional(choice(*_ATTENTION_SCALES)),
        'residual': optional(choice(*_RESIDUALS)),
        'out_proj': optional(flag),
        'ffn_mult': optional(integer(1, 'the feed-forward width factor')),
        'ffn_hidden_dropout': optional(flag),
        'separate_kv_norm': optional(flag),
        'norm_eps': optional(number(0.0, low_open=True)),
        **{name: optional(choice(*values))
           for name, values in _CHOICES.items()},
    },
    'method': {
        'penalty_weight': number(0.0, why="IRM's and V-REx's penalty "
                                 "weight"),
        'penalty_anneal_epochs': integer(0, 'epochs'),
        'drop_ratio': number(**_FRACTION, why='the share of edges or nodes '
                             'dropped'),
        'mixup_alpha': number(0.0, low_open=True,
                              why='the Beta distribution parameter'),
    },
}


def setting_problem(section: str, name: str, value: Any) -> Optional[str]:
    r"""One line saying what is wrong with ``--set SECTION.NAME=VALUE``, or
    ``None`` (also for a setting the table does not know)."""
    check = SETTING_CHECKS.get(section, {}).get(name)
    problem = check(value) if check is not None else None
    if problem is None:
        return None
    return f'--set {section}.{name}={_shown(value)}: {problem}'


def check_setting_values(settings: Mapping[str, Mapping[str, Any]]):
    r"""Raises :class:`ValueError` (one line) for the first setting of
    :obj:`settings` (``{section: {name: value}}``) whose value
    :data:`SETTING_CHECKS` refuses."""
    for section, given in settings.items():
        for name, value in given.items():
            problem = setting_problem(section, name, value)
            if problem:
                raise ValueError(problem)


def check_readout(hma: Mapping[str, Any], given: Mapping[str, Any],
                  backbone: str, backbone_kwargs: Mapping[str, Any]):
    r"""Raises :class:`ValueError` when the HMA readout a run would build
    (settings :obj:`hma`, of which :obj:`given` came from ``--set``) on
    :obj:`backbone` refuses them together (e.g. heads that do not divide
    the backbone's width plus the label size). Builds a stand-in backbone
    and a readout with a queue and slots of one row (sizes are checked by
    :data:`SETTING_CHECKS`)."""
    spec = BACKBONES[backbone]
    # What the runner passes: the arguments the class takes (a protocol's
    # may not all apply to another --backbone).
    accepted = (set(inspect.signature(spec.cls.__init__).parameters)
                - set(spec.fixed))
    try:
        encoder = build_backbone(
            backbone, num_features=1, input_shape=(1, 8, 8),
            **{k: v for k, v in backbone_kwargs.items() if k in accepted})
        HMAReadout(encoder.out_channels, 2,
                   **{**hma, 'memory_size': 1, 'slots_per_class': 1})
    except (TypeError, ValueError) as e:
        names = ', '.join(f'hma.{k}={_shown(v)}' for k, v in given.items())
        raise ValueError(f'--set {names}: {e}' if names else str(e)) \
            from None


def _shown(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


__all__ = ['SETTING_CHECKS', 'setting_problem', 'check_setting_values',
           'check_readout', 'integer', 'number', 'choice', 'flag',
           'optional']
