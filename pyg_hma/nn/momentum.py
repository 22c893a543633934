"""Momentum (EMA) copy of a backbone, MoCo-style."""
from __future__ import annotations

import copy
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn


def _parameters_and_buffers(module: nn.Module) -> Tuple[list, list]:
    r"""``(list(module.parameters()), list(module.buffers()))`` in one walk
    over the submodules (each walk is most of the cost of an EMA step of a
    small backbone): the same tensors in the same order, shared ones once."""
    params, buffers, seen_params, seen_buffers = [], [], set(), set()
    for m in module.modules():
        for members, out, seen in ((m._parameters, params, seen_params),
                                   (m._buffers, buffers, seen_buffers)):
            for t in members.values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
    return params, buffers


@torch.no_grad()
def momentum_step(params: Sequence[Tensor], online_params: Sequence[Tensor],
                  buffers: Sequence[Tensor], online_buffers: Sequence[Tensor],
                  momentum: float):
    r"""One EMA step of a momentum copy's tensors towards the online ones,
    :math:`\theta_k \leftarrow m\,\theta_k + (1 - m)\,\theta_q`, and the
    buffers copied (the common prefix, as :func:`zip` pairs them): the one
    definition :class:`MomentumEncoder` and the seed-batched trainer (whose
    tensors carry a leading seed dimension) both execute."""
    if params:
        # theta_k + (1 - m) (theta_q - theta_k), one fused call.
        torch._foreach_lerp_(list(params), list(online_params),
                             1.0 - momentum)
    n = min(len(buffers), len(online_buffers))
    if n:
        torch._foreach_copy_(list(buffers[:n]), list(online_buffers[:n]))


class MomentumEncoder(nn.Module):
    r"""A frozen copy of :obj:`module` whose parameters follow the online
    module as an exponential moving average, as in MoCo:

    .. math::
        \theta_k \leftarrow m\,\theta_k + (1 - m)\,\theta_q

    Buffers (e.g. BatchNorm running statistics) are copied from the online
    module. The copy never receives gradients and its forward runs under
    :func:`torch.no_grad`. It follows the train/eval mode of its parent, like
    MoCo's key encoder.

    Args:
        module (torch.nn.Module): the online module to copy.
        momentum (float, optional): :math:`m` in :math:`[0, 1]`; :obj:`0`
            copies the online weights at every update. (default: :obj:`0.999`)
    """
    def __init__(self, module: nn.Module, momentum: float = 0.999):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1] (got {momentum})")
        self.momentum = momentum
        self.module = copy.deepcopy(module)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module):
        r"""One EMA step towards the parameters of :obj:`online`."""
        # Under no_grad the online parameters are read as they are (no
        # detached copies needed).
        params, buffers = _parameters_and_buffers(self.module)
        online_params, online_buffers = _parameters_and_buffers(online)
        if len(params) != len(online_params):
            raise ValueError("MomentumEncoder.update got a module with a "
                             "different set of parameters than its copy")
        momentum_step(params, online_params, buffers, online_buffers,
                      self.momentum)

    @torch.no_grad()
    def copy_from(self, online: nn.Module):
        r"""Sets the copy equal to :obj:`online` (e.g. after re-initialising
        it)."""
        self.module.load_state_dict(online.state_dict())

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.module.__class__.__name__}, '
                f'momentum={self.momentum})')
