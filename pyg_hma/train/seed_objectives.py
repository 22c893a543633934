r"""The optimisation step of seed-batched training
(:mod:`pyg_hma.train.seed_batch`), over the ``[S, B, ...]`` logits of a
:class:`~pyg_hma.train.stacked.StackedModel`: the objective's own stacked
form (:meth:`Objective.stacked <pyg_hma.methods.Objective.stacked>`,
reached through the method registry), Adam per seed (:class:`SeedAdam`),
gradient clipping per seed (:func:`clip_per_seed`) and the step itself
(:func:`stacked_train_step`); re-exported by :mod:`pyg_hma.train.seed_batch`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import math

import torch
from torch import Tensor
from torch.optim.adam import adam as adam_update

from ..methods import Criterion, Objective, StepContext
from .stacked import Noise, StackedModel, UnionBatch

#: Elements per seed at which a stacked tensor's seeds all fall on whole
#: vectors of the fused Adam kernel (64 floats: four 512-bit vectors).
ALIGNED = 64


class SeedAdam(torch.optim.Adam):
    r"""Adam over stacked parameters ``[S, ...]`` whose update of a seed
    does not depend on the other seeds of its group.

    One kernel call over the stacked tensor is elementwise the S Adams, but
    the fused (vectorised) kernel takes a tensor's last elements through a
    scalar loop that rounds differently, so a seed's update would depend on
    its place in the group (a bias of two classes is all tail alone, all
    vector body as the first seed of ten). Here a stacked tensor whose
    seeds' slices are whole vectors (:data:`ALIGNED` elements) goes to the
    fused kernel whole; the others (biases, norms, embeddings of odd sizes)
    take Adam's update in correctly rounded elementwise operations only
    (:func:`_exact_adam`), which no position can change. Updates are bitwise
    those of the seed alone, in any group. The state has
    :class:`torch.optim.Adam`'s format (``step`` one count for the group,
    the moments stacked)."""
    def __init__(self, params, **kwargs):
        try:
            super().__init__(params, fused=True, **kwargs)
            self._fused = True
        except (RuntimeError, TypeError):  # no fused kernel on this build
            super().__init__(params, **kwargs)
            self._fused = False

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError('SeedAdam.step takes no closure')
        for group in self.param_groups:
            whole: List[List[Tensor]] = [[], [], [], [], []]
            small: List[List[Tensor]] = [[], [], []]
            counts = []
            for p in group['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state['step'] = torch.zeros((), dtype=torch.float32,
                                                device=p.device)
                    state['exp_avg'] = torch.zeros_like(p)
                    state['exp_avg_sq'] = torch.zeros_like(p)
                moments = (p, p.grad, state['exp_avg'], state['exp_avg_sq'])
                if p[0].numel() % ALIGNED == 0:
                    # Every seed's slice is whole vectors of the fused
                    # kernel, alone and in any group: one entry.
                    for target, t in zip(whole[:4], moments):
                        target.append(t)
                    whole[4].append(state['step'].clone())
                else:
                    for target, t in zip(small, (p, state['exp_avg'],
                                                 state['exp_avg_sq'])):
                        target.append(t)
                counts.append(state['step'])
            if not counts:
                continue
            beta1, beta2 = group['betas']
            if whole[0]:
                adam_update(
                    *whole[:4], [], whole[4], foreach=False,
                    fused=self._fused, amsgrad=False, beta1=beta1,
                    beta2=beta2, lr=group['lr'],
                    weight_decay=group['weight_decay'], eps=group['eps'],
                    maximize=False)
            if small[0]:
                _exact_adam(small[0], [p.grad for p in small[0]], small[1],
                            small[2], float(counts[0]) + 1, beta1, beta2,
                            group['lr'], group['weight_decay'], group['eps'])
            for count in counts:
                count.add_(1)


def _exact_adam(params: List[Tensor], grads: List[Tensor],
                exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
                step: float, beta1: float, beta2: float, lr: float,
                weight_decay: float, eps: float):
    # Adam (L2 weight decay, as torch.optim.Adam) in correctly rounded
    # elementwise operations only (mul, add, sub, div, sqrt: no fused
    # multiply-add), so that an element's update does not depend on where it
    # lies in its tensor: the tensors whose seeds' slices are not whole
    # vectors of the fused kernel (biases, norms, embeddings of odd sizes).
    if weight_decay:
        grads = torch._foreach_add(grads, torch._foreach_mul(params,
                                                             weight_decay))
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, torch._foreach_mul(grads, 1.0 - beta1))
    torch._foreach_mul_(exp_avg_sqs, beta2)
    squares = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(squares, 1.0 - beta2)
    torch._foreach_add_(exp_avg_sqs, squares)
    correction1 = 1.0 - beta1 ** step
    correction2 = 1.0 - beta2 ** step
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, math.sqrt(correction2))
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(exp_avgs, denom)
    torch._foreach_mul_(update, lr / correction1)
    torch._foreach_sub_(params, update)


def clip_per_seed(params: Sequence[Tensor], max_norm: float):
    r""":func:`torch.nn.utils.clip_grad_norm_` for every seed separately
    (each slice ``p.grad[s]`` is seed ``s``'s gradient)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    S = grads[0].size(0)
    # [S, P]: each seed's norms contiguous, so that every seed's total is
    # the same reduction over P values whatever S (over the [P, S] layout a
    # reduction along P takes another summation order when S > 1).
    norms = torch.stack([g.reshape(S, -1).norm(dim=1) for g in grads], dim=1)
    total = norms.norm(dim=1)  # [S]
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view((S, ) + (1, ) * (g.dim() - 1)))


def stacked_train_step(model: StackedModel, data: UnionBatch,
                       objective: Objective, crit: Criterion,
                       ctx: StepContext, noise: Noise,
                       optimizer: torch.optim.Optimizer,
                       params: Sequence[Tensor],
                       clip_grad_norm: Optional[float]):
    r"""One optimisation step of every seed of :obj:`model` on
    :obj:`data` (one batch per seed), as
    :func:`~pyg_hma.train.engine.train_step` is for one model: the per-seed
    losses of :meth:`Objective.stacked
    <pyg_hma.methods.Objective.stacked>`, backward, per-seed gradient
    clipping (:func:`clip_per_seed`) and the optimizer step. Returns
    ``(losses [S], logits [S, B, out], extras)``."""
    optimizer.zero_grad(set_to_none=True)
    loss, logits, extras = objective.stacked(model, data, crit, ctx, noise)
    loss.sum().backward()
    if clip_grad_norm is not None:
        clip_per_seed(params, clip_grad_norm)
    optimizer.step()
    return loss, logits, extras


__all__ = ['SeedAdam', 'clip_per_seed',
           'stacked_train_step']
