r"""Training objectives of the benchmark methods.

Every method (:data:`pyg_hma.methods.METHODS`) is a backbone plus a head
(:func:`pyg_hma.models.build_model`) trained with one of these objectives:

* ``erm``, and every HMA variant (``rma``, ``abd``, ``abd+syn``, ``abd+rma``,
  ``hma``): the mean task loss. The labels are passed to the model as
  ``model(batch, y=...)``; an HMA model writes them into its queue, a linear
  head ignores them.
* ``irm``: IRMv1 (Arjovsky et al., 2019): the mean loss plus
  :math:`\lambda` times the mean over environments of the squared gradient of
  the environment's risk with respect to a dummy scale :math:`w = 1` on the
  logits. :math:`\lambda` is 1 for the first ``penalty_anneal_epochs`` epochs
  and ``penalty_weight`` after; when it exceeds 1 the whole loss is divided
  by it (IRM's annealing). Hyperparameters: :class:`PenaltyHyperparameters`.
* ``vrex``: V-REx (Krueger et al., 2021): the mean loss plus :math:`\lambda`
  times the variance of the environment risks, annealed the same way.
* ``dropedge``: ERM on batches from which a share ``drop_ratio`` of the
  (undirected) edges is removed (Rong et al., 2020). Hyperparameters:
  :class:`DropHyperparameters`.
* ``dropnode``: ERM on batches from which a share ``drop_ratio`` of the
  nodes is removed with their edges (:class:`DropHyperparameters`).
* ``mmixup``: Manifold Mixup at the graph level (Wang et al., 2021): the
  pooled embeddings of a batch and of a permutation of it are mixed with
  :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` before the linear head,
  and the loss mixes both labels with the same :math:`\lambda`
  (:class:`MixupHyperparameters`).

**Hyperparameters** are the objective's own frozen dataclass
(:attr:`Objective.hyperparameters`), with defaults; the training loop hands
an instance to every step in :attr:`StepContext.hyperparameters`.

**Environments** for IRM and V-REx come from the batch's :obj:`env`
attribute when the dataset provides one (Colored MNIST's two colour
environments). Graph datasets have none; CIGA then draws, for each training
step, a Bernoulli(1/2) environment for every position of the shuffled
training order (``env_idx = sigmoid(randn(N)) > 0.5`` indexed by position),
so a graph's environment is random and changes from epoch to epoch. We do the
same: every graph of a batch gets a fresh random environment in
:math:`\{0, 1\}` from the global RNG (whose state is checkpointed).

All randomness comes from the global torch RNG, so a run is reproducible from
its seed and resumable from a checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_field_types

Extras = Dict[str, Tensor]


def per_seed_loss(crit: 'Criterion', logits: Tensor,
                  y: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Every seed's per-sample losses and weights, ``[S, B]`` each, from
    logits ``[S, B, out]``: one call per seed on its own ``[B, out]``
    logits (the softmax kernels vectorise across rows when there are few
    classes, so over the group's ``[S * B, out]`` a seed's rows would round
    as their place in the group decides)."""
    pairs = [crit.per_sample(logits[s], y[s]) for s in range(logits.size(0))]
    return (torch.stack([loss for loss, _ in pairs]),
            torch.stack([weight for _, weight in pairs]))


class Criterion:
    r"""The task loss, per sample, with label handling in one place.

    Args:
        kind: ``'ce'`` (cross entropy over :math:`C` logits, integer labels)
            or ``'bce'`` (binary cross entropy with logits over :math:`T`
            tasks; NaN targets are unlabelled and ignored, as in OGB).
    """
    def __init__(self, kind: str):
        if kind not in ('ce', 'bce'):
            raise ValueError(f"loss must be 'ce' or 'bce' (got '{kind}')")
        self.kind = kind

    def per_sample(self, logits: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        r"""Returns the summed loss of each sample and its number of labelled
        targets (:math:`(B)` each)."""
        if self.kind == 'ce':
            loss = F.cross_entropy(logits, y.view(-1).long(),
                                   reduction='none')
            return loss, torch.ones_like(loss)
        target = y.view(logits.size(0), -1).to(logits.dtype)
        labelled = target == target  # NaN marks a missing label
        loss = F.binary_cross_entropy_with_logits(
            logits, torch.nan_to_num(target), reduction='none')
        loss = loss * labelled
        return loss.sum(dim=1), labelled.sum(dim=1).to(loss.dtype)

    def mean(self, logits: Tensor, y: Tensor) -> Tensor:
        loss, weight = self.per_sample(logits, y)
        return loss.sum() / weight.sum().clamp_min(1.0)

    def tokens(self, y: Tensor) -> Tensor:
        r"""Integer class labels for HMA's queue (single-task only)."""
        if self.kind == 'bce':
            return torch.nan_to_num(y.view(-1).float()).long()
        return y.view(-1).long()


@dataclass(frozen=True)
class Hyperparameters:
    r"""The hyperparameters of an objective (none for ERM). A subclass adds
    typed fields with defaults; values are checked on construction."""

    def __post_init__(self):
        check_field_types(self)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> 'Hyperparameters':
        r"""The hyperparameters named in :obj:`settings` (by field name;
        other names, those of other objectives, are ignored), the defaults
        for the rest."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in names})


@dataclass(frozen=True)
class PenaltyHyperparameters(Hyperparameters):
    r"""IRM and V-REx.

    Args:
        penalty_weight: the penalty weight after annealing.
        penalty_anneal_epochs: epochs with penalty weight 1 first.
    """
    penalty_weight: float = 1.0
    penalty_anneal_epochs: int = 0

    def penalty_lambda(self, epoch: int) -> float:
        r"""The penalty weight :math:`\lambda` of epoch :obj:`epoch`
        (1-based)."""
        return (self.penalty_weight if epoch > self.penalty_anneal_epochs
                else 1.0)


@dataclass(frozen=True)
class DropHyperparameters(Hyperparameters):
    r"""DropEdge and DropNode.

    Args:
        drop_ratio: the share of edges (nodes) removed, in :math:`[0, 1)`.
    """
    drop_ratio: float = 0.2

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.drop_ratio < 1.0:
            raise ValueError(f'drop_ratio must lie in [0, 1) (got '
                             f'{self.drop_ratio})')


@dataclass(frozen=True)
class MixupHyperparameters(Hyperparameters):
    r"""Manifold Mixup.

    Args:
        mixup_alpha: the parameter :math:`\alpha` of
            :math:`\mathrm{Beta}(\alpha, \alpha)`.
    """
    mixup_alpha: float = 1.0


@dataclass
class StepContext:
    r"""What an objective may read besides the batch: the epoch (1-based)
    and the objective's hyperparameters (``None``: its defaults; see
    :meth:`Objective.hyperparameters_of`)."""
    epoch: int
    hyperparameters: Optional[Hyperparameters] = None


class Objective:
    r"""Computes ``(loss, logits, extras)`` for one training batch;
    :obj:`extras` are scalars logged as epoch means. :attr:`hyperparameters`
    is the class of its hyperparameters (:class:`Hyperparameters`)."""
    name = 'erm'
    hyperparameters: Type[Hyperparameters] = Hyperparameters

    def hyperparameters_of(self, ctx: StepContext) -> Hyperparameters:
        r"""The hyperparameters of a step: :obj:`ctx`'s, or this
        objective's defaults when it holds none."""
        if ctx.hyperparameters is None:
            return self.hyperparameters()
        return ctx.hyperparameters

    def transform(self, batch, ctx: StepContext,
                  generator: Optional[torch.Generator] = None):
        r"""The batch as this objective trains on it: the batch itself
        (DropEdge and DropNode thin it, drawing from :obj:`generator`, the
        global RNG when ``None``)."""
        return batch

    def __call__(self, model: nn.Module, batch, crit: Criterion,
                 ctx: StepContext) -> Tuple[Tensor, Tensor, Extras]:
        batch = self.transform(batch, ctx)
        logits = model(batch, y=crit.tokens(batch.y))
        return crit.mean(logits, batch.y), logits, {}

    def stacked(self, model, data, crit: Criterion, ctx: StepContext,
                noise) -> Tuple[Tensor, Tensor, Extras]:
        r"""This objective for every seed of a seed-batched group:
        :obj:`model` a :class:`~pyg_hma.train.stacked.StackedModel`,
        :obj:`data` the union of the seeds' (transformed) batches, every
        draw from :obj:`noise` (the seeds' own streams). Returns the
        per-seed losses ``[S]``, the logits ``[S, B, out]`` and extras
        ``{name: [S]}``: for each seed what :meth:`__call__` computes on its
        own model and batch."""
        S, B = data.S, data.B
        tokens = crit.tokens(data.y.reshape(S * B, *data.y.shape[2:]))
        logits = model(data, noise, y=tokens.view(S, B))
        loss, weight = per_seed_loss(crit, logits, data.y)
        return loss.sum(1) / weight.sum(1).clamp_min(1.0), logits, {}

    @classmethod
    def stacks(cls) -> bool:
        r"""Whether :meth:`stacked` is this objective's own form (defined
        where its :meth:`__call__` is, or below): an objective that
        overrides only :meth:`__call__` trains one seed at a time."""
        call = next(k for k in cls.__mro__ if '__call__' in vars(k))
        stacked = next(k for k in cls.__mro__ if 'stacked' in vars(k))
        return issubclass(stacked, call)


class _EnvObjective(Objective):
    num_envs = 2
    hyperparameters = PenaltyHyperparameters

    @staticmethod
    def environments(batch, num: int) -> Tensor:
        env = getattr(batch, 'env', None)
        if env is not None:
            return env.view(-1).long()
        return torch.randint(0, 2, (num, ), device=batch.y.device)

    def _risks(self, loss: Tensor, weight: Tensor, env: Tensor):
        onehot = F.one_hot(env, self.num_envs).to(loss.dtype)  # [B, E]
        counts = weight @ onehot
        risks = (loss @ onehot) / counts.clamp_min(1.0)
        return risks, counts > 0

    def _combine(self, erm: Tensor, penalty: Tensor, ctx: StepContext):
        lam = self.hyperparameters_of(ctx).penalty_lambda(ctx.epoch)
        loss = erm + lam * penalty
        if lam > 1.0:  # IRM: keep the gradient scale of the annealed loss
            loss = loss / lam
        return loss

    def _stacked_environments(self, data, noise, batch_size: int,
                              device) -> Tensor:
        # [S, B]: the dataset's (Colored MNIST), or drawn per seed.
        if data.env is not None:
            return data.env
        return noise.randint(self.num_envs, batch_size, device)

    def _stacked_risks(self, loss: Tensor, weight: Tensor, env: Tensor):
        # Every seed's environment risks [S, E] and which are present.
        onehot = F.one_hot(env, self.num_envs).to(loss.dtype)
        counts = torch.bmm(weight.unsqueeze(1), onehot).squeeze(1)
        risks = torch.bmm(loss.unsqueeze(1), onehot).squeeze(1) / \
            counts.clamp_min(1.0)
        return risks, counts > 0


class IRM(_EnvObjective):
    name = 'irm'

    def __call__(self, model, batch, crit, ctx):
        logits = model(batch)
        env = self.environments(batch, logits.size(0))
        # One dummy scale per environment: the gradient of the summed env
        # risks w.r.t. scale[e] is the gradient of risk e alone.
        scale = torch.ones(self.num_envs, device=logits.device,
                           requires_grad=True)
        loss, weight = crit.per_sample(logits * scale[env].view(-1, 1),
                                       batch.y)
        risks, _ = self._risks(loss, weight, env)
        grad, = torch.autograd.grad(risks.sum(), scale, create_graph=True)
        penalty = grad.pow(2).mean()
        erm = loss.sum() / weight.sum().clamp_min(1.0)
        return self._combine(erm, penalty, ctx), logits, {'penalty': penalty}

    def stacked(self, model, data, crit, ctx, noise):
        logits = model(data, noise)
        S, B = logits.shape[:2]
        E = self.num_envs
        env = self._stacked_environments(data, noise, B, logits.device)
        scale = torch.ones(S, E, device=logits.device, requires_grad=True)
        loss, weight = per_seed_loss(
            crit, logits * scale.gather(1, env).unsqueeze(-1), data.y)
        risks, _ = self._stacked_risks(loss, weight, env)
        grad, = torch.autograd.grad(risks.sum(), scale, create_graph=True)
        penalty = grad.pow(2).mean(1)
        erm = loss.sum(1) / weight.sum(1).clamp_min(1.0)
        return self._combine(erm, penalty, ctx), logits, {'penalty': penalty}


class VREx(_EnvObjective):
    name = 'vrex'

    def __call__(self, model, batch, crit, ctx):
        logits = model(batch)
        env = self.environments(batch, logits.size(0))
        loss, weight = crit.per_sample(logits, batch.y)
        risks, present = self._risks(loss, weight, env)
        present = present.to(risks.dtype)
        mean = (risks * present).sum() / present.sum().clamp_min(1.0)
        penalty = (((risks - mean) ** 2) * present).sum() / \
            present.sum().clamp_min(1.0)
        erm = loss.sum() / weight.sum().clamp_min(1.0)
        return self._combine(erm, penalty, ctx), logits, {'penalty': penalty}

    def stacked(self, model, data, crit, ctx, noise):
        logits = model(data, noise)
        B = logits.size(1)
        env = self._stacked_environments(data, noise, B, logits.device)
        loss, weight = per_seed_loss(crit, logits, data.y)
        risks, present = self._stacked_risks(loss, weight, env)
        present = present.to(risks.dtype)
        n = present.sum(1).clamp_min(1.0)
        mean = (risks * present).sum(1, keepdim=True) / n.unsqueeze(1)
        penalty = (((risks - mean) ** 2) * present).sum(1) / n
        erm = loss.sum(1) / weight.sum(1).clamp_min(1.0)
        return self._combine(erm, penalty, ctx), logits, {'penalty': penalty}


def _shallow_copy(batch):
    return copy.copy(batch)


class DropEdge(Objective):
    name = 'dropedge'
    hyperparameters = DropHyperparameters

    def transform(self, batch, ctx: StepContext,
                  generator: Optional[torch.Generator] = None):
        r""":obj:`batch` without a share ``drop_ratio`` of its edges. TU
        graphs store both directions of every edge; they are dropped
        together. The draws are those of PyG's ``dropout_edge(...,
        force_undirected=True)``, from :obj:`generator` (default: the global
        RNG, where they equal PyG's call)."""
        p = self.hyperparameters_of(ctx).drop_ratio
        if p == 0.0:  # as PyG: no draw, the batch unchanged
            return batch
        out = _shallow_copy(batch)
        row, col = batch.edge_index
        keep = torch.rand(row.size(0), device=row.device,
                          generator=generator) >= p
        keep[row > col] = False
        kept = batch.edge_index[:, keep]
        out.edge_index = torch.cat([kept, kept.flip(0)], dim=1)
        if getattr(batch, 'edge_attr', None) is not None:
            edge_id = keep.nonzero().repeat((2, 1)).view(-1)
            out.edge_attr = batch.edge_attr[edge_id]
        return out


class DropNode(Objective):
    name = 'dropnode'
    hyperparameters = DropHyperparameters

    def transform(self, batch, ctx: StepContext,
                  generator: Optional[torch.Generator] = None):
        r""":obj:`batch` without a share ``drop_ratio`` of its nodes and
        their edges (the draws of PyG's ``dropout_node``, from
        :obj:`generator`; default: the global RNG, where they equal PyG's
        call). A graph that lost all its nodes pools to zeros (pooling is
        sized by ``batch.num_graphs``), so every label keeps its
        prediction."""
        from torch_geometric.utils import subgraph
        p = self.hyperparameters_of(ctx).drop_ratio
        if p == 0.0:  # as PyG: no draw, the batch unchanged
            return batch
        num_nodes = batch.x.size(0)
        out = _shallow_copy(batch)
        node_mask = torch.rand(num_nodes, device=batch.edge_index.device,
                               generator=generator) > p
        out.edge_index, _, edge_mask = subgraph(
            node_mask, batch.edge_index, relabel_nodes=True,
            num_nodes=num_nodes, return_edge_mask=True)
        out.x = batch.x[node_mask]
        out.batch = batch.batch[node_mask]
        if getattr(batch, 'edge_attr', None) is not None:
            out.edge_attr = batch.edge_attr[edge_mask]
        return out


class ManifoldMixup(Objective):
    name = 'mmixup'
    hyperparameters = MixupHyperparameters

    def __call__(self, model, batch, crit, ctx):
        if not (hasattr(model, 'encoder') and hasattr(model, 'head')):
            raise TypeError('mmixup needs a model with a linear head '
                            '(model.encoder and model.head)')
        h = model.encoder(batch)
        # Drawn on the CPU from the global RNG: no device synchronisation.
        alpha = self.hyperparameters_of(ctx).mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(h.size(0), device=h.device)
        logits = model.head(lam * h + (1.0 - lam) * h[perm])
        y = batch.y
        loss = lam * crit.mean(logits, y) + (1.0 - lam) * crit.mean(
            logits, y.view(h.size(0), -1)[perm].view_as(y))
        return loss, logits, {}

    def stacked(self, model, data, crit, ctx, noise):
        # Seed s mixes its pooled embeddings with a permutation of them,
        # lambda ~ Beta(alpha, alpha) and the permutation drawn from its own
        # generator (torch's Beta takes no generator: a NumPy generator
        # seeded from it draws lambda).
        h = model.embed(data, noise)  # [S, B, d]
        S, B, d = h.shape
        alpha = self.hyperparameters_of(ctx).mixup_alpha
        lams, perms = [], []
        for gen in noise.generators:
            state = int(torch.randint(2 ** 62, (), generator=gen,
                                      device=gen.device))
            lams.append(float(np.random.default_rng(state).beta(alpha,
                                                                alpha)))
            perms.append(torch.randperm(B, generator=gen, device=gen.device))
        lam = torch.tensor(lams, dtype=h.dtype, device=h.device).view(S, 1, 1)
        perm = torch.stack(perms).to(h.device)  # [S, B]
        mixed = h.gather(1, perm.unsqueeze(-1).expand(S, B, d))
        logits = model.head(lam * h + (1.0 - lam) * mixed)
        y = data.y
        y_perm = y.gather(1, perm.view(S, B, *([1] * (y.dim() - 2)))
                          .expand_as(y))
        own, weight = per_seed_loss(crit, logits, y)
        other, weight_perm = per_seed_loss(crit, logits, y_perm)
        lam = lam.view(S)
        loss = (lam * own.sum(1) / weight.sum(1).clamp_min(1.0)
                + (1.0 - lam) * other.sum(1)
                / weight_perm.sum(1).clamp_min(1.0))
        return loss, logits, {}
