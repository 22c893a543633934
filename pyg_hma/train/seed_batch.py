r"""Seed-batched training: the S seeds of one table cell trained as one model.

:func:`fit_seeds` trains S runs that differ only in their seed (same
dataset split, backbone, method and :class:`~pyg_hma.train.TrainConfig`) in
lockstep: one :class:`~pyg_hma.train.stacked.StackedModel` whose parameters
carry a leading seed dimension takes one step for all seeds at once (see
:mod:`pyg_hma.train.stacked` for the layers). Each seed keeps what
:func:`~pyg_hma.train.fit` gives it:

* its initial weights (``seed_everything(seed); model_fn()``, then stacked);
* its own data order (its own loader, re-seeded from ``(seed, epoch)``);
* its own optimizer state (one Adam over the stacked tensors is elementwise
  the S Adams; gradient clipping uses each seed's own norm);
* its own evaluation, best-validation selection, early stopping, history,
  log and checkpoint (``seed{S}.ckpt``, in :func:`fit`'s format), and its
  own :class:`~pyg_hma.train.FitResult`.

A seed that stops early leaves the group (its result is final) and the
others continue as a smaller group. On a CPU, seeds whose batches are large
train in several smaller groups, one after the other
(:func:`seed_group_limit`): past about 1.6 MB per activation a stacked
step costs more than its seeds' steps alone. Each seed's log says which seeds
shared its model.

Randomness: :func:`fit` draws dropout masks and IRM/V-REx environments from
the global torch RNG, which S interleaved seeds cannot reproduce. Here every
seed draws them from its own generator, re-seeded from ``(seed, epoch)``
before each epoch, and over its own rows only, so a seed's run does not
depend on which other seeds share its group, and resumption needs no RNG
state. Beyond the draws, every kernel whose rounding could depend on the
group reduces over the seed's own values alone: each seed's Adam update is a
tensor of its own (:class:`SeedAdam`), its loss and clipping norm are its own
reductions, and gradients of weights are reduced over its real rows, not the
group's padded ones (:mod:`pyg_hma.train.stacked`). A seed trained alone (a
group of one) and in any group therefore ends with the same bits, in
float32 with dropout (``tests/test_invariance.py``); a run killed between two
seeds' checkpoint writes resumes to the same bits too (the seed left behind
catches up alone). Without dropout (and without IRM/V-REx) a seed trained
here follows :func:`fit`'s trajectory with that seed up to float rounding
(``tests/test_seed_batch.py``); with dropout it is another, equally valid
draw. The checkpoints' fingerprint names the streams (:data:`STREAMS`).

Supported models: a linear head
(:class:`~pyg_hma.models.build.LinearClassifier`) or
:class:`~pyg_hma.HMAClassifier` around a :class:`~pyg_hma.models.gnn.GNN`
(GCN/GIN, virtual node, OGB encoders) or G-Mixup's GIN
(:class:`~pyg_hma.models.tu_gin.GMixupGIN`); methods ERM, the HMA variants,
IRM, V-REx, DropEdge and DropNode (each seed's batch thinned with its own
generator, :func:`seed_inputs`) and M-Mixup (linear head; each seed's
lambda and permutation from its own generator); and Colored MNIST's MLP
and CNN (:class:`~pyg_hma.train.stacked.ImageUnion`; IRM and V-REx read
the dataset's environments there, as :func:`fit` does). Models or methods
that cannot be batched (see
:func:`seed_batch_support`) fall back to one :func:`fit` per seed, with one
warning, and ``result.extra['seed_batch']`` says which path each result took.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..methods import (METHODS, Criterion, Hyperparameters, ManifoldMixup,
                       Objective, StepContext, method_hyperparameters)
from ..models.build import LinearClassifier
from .checkpoint import (Checkpointer, FitResult, RunProgress,
                         checkpoint_fingerprint, optimizer_and_scheduler,
                         step_scheduler)
from .config import TrainConfig
from .engine import (EpochLogger, SplitScorer, _check_static_options,
                     epoch_seed, fit, open_log, resolve_device, score_epoch,
                     seed_everything)
from ..loader import PaddedLoader, as_batch, get_loader_factory
from .metrics import compute_metric
from .seed_objectives import SeedAdam, clip_per_seed, stacked_train_step
from .stacked import Noise, StackedModel, union_of, unsupported_reason

#: The random streams of :func:`fit_seeds` (every seed's own generators,
#: re-seeded from ``(seed, epoch)``), named in its checkpoints' fingerprint:
#: :func:`~pyg_hma.train.fit` draws from the global generator instead, and
#: static shapes hash their dropout masks (:data:`STATIC_STREAMS`). Not an
#: execution detail: the size and members of a group never change a seed's
#: run (``tests/test_invariance.py``).
STREAMS = 'per-seed'
STATIC_STREAMS = 'per-seed/static'


def streams_of(pad: Optional[Sequence[int]] = None,
               compile: Optional[str] = None) -> str:
    r"""The streams :func:`fit_seeds` draws with these options: static
    shapes (:obj:`pad` or :obj:`compile`) hash their dropout masks."""
    return STREAMS if pad is None and compile is None else STATIC_STREAMS

#: On a CPU, seeds trained as one model gain while one activation of the
#: whole group (``[S, nodes per batch, width]``) stays within this many
#: elements (1.6 MB in float32); past it the group's tensors leave the
#: caches and a step costs more than S steps alone. Measured per model-step
#: against one seed alone (``benchmarks/speed.py --seed-batch``, one thread,
#: ``docs/performance.md``): NCI1 GCN, 0.3 M elements at S = 10: 2.0x;
#: Graph-SST5 GCN, 0.2 M at S = 4: 1.3x ERM, 1.4x HMA, 0.5 M at S = 10:
#: 1.05x ERM; ogbg-molbbbp GCN (0.23 M per seed), 0.9 M at S = 4: 0.80x ERM,
#: 0.91x HMA (in the study's lanes a seed alone took 3.8 s per epoch, 5-5.7
#: s per seed in a group of 4); ogbg-molbace GIN, 1.0 M at S = 3: 0.9x;
#: IMDB-BINARY GIN, 1.3 M at S = 8: 1.4x (1.4x at S = 1 too); DD GCN,
#: 1.2 M at S = 4: 1.0x, 2.9 M at S = 10: 0.86x; REDDIT-BINARY GIN, 14 M
#: at S = 4: 0.5-0.7x.
CPU_GROUP_ELEMENTS = 400_000


def seed_group_limit(model: nn.Module, train, batch_size: int,
                     device: Any) -> Optional[int]:
    r"""How many seeds :func:`fit_seeds` trains as one model by default:
    on a CPU, as many as keep one activation of the group, ``S x`` (mean
    nodes of a training batch) ``x`` (the encoder's width), within
    :data:`CPU_GROUP_ELEMENTS` (at least one); ``None`` (no limit) on
    other devices and for samples that are not graphs. The mean is taken
    over the first 1000 training graphs."""
    if torch.device(device).type != 'cpu' or len(train) == 0:
        return None
    sample = [train[i] for i in range(min(len(train), 1000))]
    if getattr(sample[0], 'edge_index', None) is None:
        return None
    width = getattr(getattr(model, 'encoder', model), 'out_channels', None)
    if not width:
        return None
    nodes = sum(int(g.num_nodes) for g in sample) / len(sample)
    per_seed = nodes * batch_size * int(width)
    return max(1, int(CPU_GROUP_ELEMENTS // max(per_seed, 1.0)))


def seed_batch_support(model: nn.Module, method: str) -> Optional[str]:
    r"""``None`` when :func:`fit_seeds` can batch :obj:`method` on models like
    :obj:`model`, else the reason it falls back to :func:`fit` per seed."""
    spec = METHODS[method]
    kind = type(spec.objective)
    if not kind.stacks():
        return f"method '{method}' ({kind.__name__})"
    if isinstance(spec.objective, ManifoldMixup) and \
            not isinstance(model, LinearClassifier):
        return f"method '{method}' without a linear head"
    return unsupported_reason(model)


def seed_inputs(objective: Objective, batches: Sequence, noise: Noise,
                ctx: StepContext) -> List:
    r"""Every seed's training batch as :obj:`objective` trains on it
    (:meth:`Objective.transform <pyg_hma.methods.Objective.transform>` with
    seed ``s``'s generator: DropEdge and DropNode thin it)."""
    return [objective.transform(batch, ctx, generator)
            for batch, generator in zip(batches, noise.generators)]


def noise_seed(seed: int, epoch: int) -> int:
    r"""The seed of a seed's dropout/environment generator in an epoch."""
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])


# --------------------------------------------------------------------------
# One seed's run inside a group
# --------------------------------------------------------------------------

class _SeedRun(RunProgress):
    # One seed's run inside a group: its progress (RunProgress: tracker,
    # history, resume, checkpoint, result) and what it trains with.
    def __init__(self, seed: int, model: nn.Module, cfg: TrainConfig):
        super().__init__(cfg)
        self.seed = seed
        self.model = model  # current weights (unstacked), also for eval
        self.checkpointer: Optional[Checkpointer] = None
        self.logger: Optional[EpochLogger] = None
        self.score: Optional[SplitScorer] = None
        self.loader = None
        self.generator = torch.Generator()
        self.noise: Optional[torch.Generator] = None

    def open(self, splits, factory, eval_loader: Callable, cfg: TrainConfig,
             device: torch.device, logger: EpochLogger):
        # Its training loader, noise generator, scorer and log.
        self.loader = factory(splits.train, batch_size=cfg.batch_size,
                              shuffle=True, device=device,
                              generator=self.generator)
        self.noise = torch.Generator(device)
        self.score = SplitScorer(
            eval_loader, splits, cfg.eval_batch_size or cfg.batch_size,
            self.seed, device)
        self.logger = logger

    def done(self, cfg: TrainConfig) -> bool:
        return self.tracker.stopped or self.next_epoch > cfg.epochs

    def seed_result(self, num_parameters: int, group: int) -> FitResult:
        return self.result(self.model, num_parameters,
                           {'seed_batch': True, 'seed_batch_group': group})


def _seed_optimizer_state(full: dict, s: int) -> dict:
    # Seed s's slice of the stacked Adam's state, in the format of an Adam
    # over one model's parameters.
    state = {i: {k: (v[s].clone() if torch.is_tensor(v) and v.dim() > 0
                     else (v.clone() if torch.is_tensor(v) else v))
                 for k, v in st.items()}
             for i, st in full['state'].items()}
    return {'state': state, 'param_groups': full['param_groups']}


def _stacked_optimizer_state(states: Sequence[dict]) -> dict:
    first = states[0]
    stacked = {}
    for i, st in first['state'].items():
        stacked[i] = {k: (torch.stack([s['state'][i][k] for s in states])
                          if torch.is_tensor(v) and v.dim() > 0 else v)
                      for k, v in st.items()}
    return {'state': stacked, 'param_groups': first['param_groups']}


# --------------------------------------------------------------------------
# fit_seeds
# --------------------------------------------------------------------------

def _checked_seeds(seeds: Sequence[int], splits, group_size: Optional[int],
                   fallback: str):
    # fit_seeds' seeds (ints) and every seed's splits, checked.
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds must be distinct and non-empty (got '
                         f'{seeds})')
    if group_size is not None and group_size < 1:
        raise ValueError(f'group_size must be at least 1 (got {group_size})')
    if fallback not in ('warn', 'silent', 'raise'):
        raise ValueError(f"fallback must be 'warn', 'silent' or 'raise' "
                         f"(got '{fallback}')")
    per_seed = (list(splits) if isinstance(splits, (list, tuple))
                else [splits] * len(seeds))
    if len(per_seed) != len(seeds):
        raise ValueError(f'splits: got {len(per_seed)} for {len(seeds)} '
                         f'seeds; give one per seed or one for all')
    if len({len(sp.train) for sp in per_seed}) > 1:
        raise ValueError('splits: the seeds\' training splits differ in '
                         'size, so their batches cannot be stacked; train '
                         'them one by one (fit) instead')
    return seeds, per_seed


def _falling_back(reason: str, fallback: str, num_seeds: int):
    # fit_seeds cannot batch (`reason`): raise, or warn its caller.
    if fallback == 'raise':
        raise NotImplementedError(f'seed batching does not support '
                                  f'{reason}')
    if fallback == 'warn':
        what = ('the seed alone' if num_seeds == 1 else
                f'the {num_seeds} seeds one by one')
        warnings.warn(f'fit_seeds: {reason} cannot be seed-batched; '
                      f'training {what}', stacklevel=3)


def _run_files(seeds: List[int], checkpoint_dir: Optional[os.PathLike],
               log_dir: Optional[os.PathLike],
               log_files: Optional[Mapping[int, os.PathLike]]):
    # The checkpoint folder (made) and every seed's log file.
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if log_files is not None and set(log_files) != set(seeds):
        raise ValueError(f'log_files: give one per seed of {seeds} (got '
                         f'{sorted(log_files)})')
    log_path = Path(log_dir) if log_dir is not None else None
    for folder in (ckpt_dir, log_path):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    log_of = {seed: (Path(log_files[seed]) if log_files is not None
                     else log_path / f'seed{seed}.log' if log_path
                     else None) for seed in seeds}
    return ckpt_dir, log_of


def fit_seeds(model_fn: Callable[[], nn.Module], splits, method: str,
              cfg: TrainConfig, *, seeds: Sequence[int],
              device: Any = 'cpu', loader: Any = 'pyg',
              checkpoint_dir: Optional[os.PathLike] = None,
              resume: bool = False, run_id: Optional[dict] = None,
              log_dir: Optional[os.PathLike] = None,
              log_files: Optional[Mapping[int, os.PathLike]] = None,
              progress: bool = False, verbose: bool = False,
              callbacks: Sequence[Callable[[int, int, dict], None]] = (),
              compare_eval_modes: bool = False,
              fallback: str = 'warn',
              hyperparameters: Optional[Mapping[str, Any]] = None,
              group_size: Optional[int] = None,
              pad: Optional[Sequence[int]] = None,
              compile: Optional[str] = None
              ) -> List[FitResult]:
    r"""Trains one run per seed of :obj:`seeds`, all at once (see the module
    docstring), and returns their :class:`~pyg_hma.train.FitResult` in the
    order of :obj:`seeds`.

    Args:
        model_fn: as in :func:`~pyg_hma.train.fit`, and so are
            :obj:`method`, :obj:`cfg`, :obj:`device`, :obj:`loader`,
            :obj:`run_id`, :obj:`progress`, :obj:`verbose`,
            :obj:`compare_eval_modes` and :obj:`hyperparameters`.
        splits: the :class:`~pyg_hma.data.DatasetSplits` of every seed, or
            a sequence of them in the order of :obj:`seeds` (protocols whose
            split depends on the seed); their training splits must have
            equal sizes (every seed sees batches of the same size).
        seeds: distinct seeds.
        checkpoint_dir: one checkpoint per seed, ``seed{S}.ckpt``, written
            (atomically) after every epoch the seed trains.
        resume: continue every seed from its checkpoint when it exists
            (seeds left at different epochs are caught up first).
        log_dir: one log per seed, ``seed{S}.log`` (one line per epoch).
        log_files: each seed's log file, instead of :obj:`log_dir`'s (the
            runners give every attempt of a run a log of its own).
        callbacks: ``cb(seed, epoch, record)`` after each seed's epoch
            checkpoint is written.
        fallback: what to do when the model or method cannot be batched
            (:func:`seed_batch_support`): ``'warn'`` (run :func:`fit` per
            seed, with one warning), ``'silent'`` or ``'raise'``.
        group_size: seeds per model (default: :func:`seed_group_limit`).
        pad: ``(node_step, edge_step)``: static shapes, as in
            :func:`~pyg_hma.train.fit`: the group's union of batches is
            padded to budgets that are multiples of the steps
            (:class:`~pyg_hma.train.stacked.UnionBatch`), BatchNorm counts
            its real rows with a mask, dropout masks are hashed per seed
            (:class:`~pyg_hma.train.stacked.Noise`, so with dropout the
            run differs from an unpadded one), and evaluation batches are
            padded too.
        compile: ``torch.compile`` mode of the group's training forward
            (the encoders and HMA's readout; evaluation runs eagerly on
            each seed's own model); implies the static streams of
            :obj:`pad` (without it, budgets of one node and one edge).
            Compiled graphs are cached per function, so each call starts
            from ``torch._dynamo.reset()``: the cells of a table trained in
            one process (other backbones, methods) would otherwise pile up
            recompilations until Dynamo's limit sends them back to eager.
    """
    seeds, per_seed = _checked_seeds(seeds, splits, group_size, fallback)
    device = resolve_device(device) if not isinstance(
        device, torch.device) else device
    ckpt_dir, log_of = _run_files(seeds, checkpoint_dir, log_dir, log_files)

    runs: List[_SeedRun] = []
    for seed in seeds:
        seed_everything(seed)
        runs.append(_SeedRun(seed, model_fn().to(device), cfg))
    _check_static_options(runs[0].model, method, pad, compile)
    reason = seed_batch_support(runs[0].model, method)
    if reason is not None:
        _falling_back(reason, fallback, len(seeds))
        return _fit_each(model_fn, per_seed, method, cfg, seeds, device,
                         loader,
                         ckpt_dir, resume, run_id, log_of, progress,
                         verbose, callbacks, compare_eval_modes, reason,
                         hyperparameters, pad, compile)

    factory = get_loader_factory(loader)
    if compile is not None:
        torch._dynamo.reset()

    def eval_loader(split, **kwargs):
        out = factory(split, device=device, **kwargs)
        return PaddedLoader(out, *pad) if pad is not None else out
    params0 = [p for p in runs[0].model.parameters() if p.requires_grad]
    num_parameters = sum(p.numel() for p in params0)
    # Static shapes: padded budgets ((1, 1) when only compiled) and hashed
    # dropout, another random stream, so checkpoints say which they hold.
    static = None
    if pad is not None or compile is not None:
        static = tuple(pad) if pad is not None else (1, 1)
    streams = streams_of(pad, compile)
    for run, run_splits in zip(runs, per_seed):
        run.checkpointer = Checkpointer(
            ckpt_dir / f'seed{run.seed}.ckpt' if ckpt_dir else None,
            checkpoint_fingerprint(method, run.seed, cfg, run_id,
                                   compare_eval_modes, streams,
                                   hyperparameters))
        run.resume(run.checkpointer.load() if resume else None, run.model)
        run.open(run_splits, factory, eval_loader, cfg, device,
                 open_log(run, log_of[run.seed], verbose, progress,
                          cfg.epochs, f'{method} seed {run.seed}'))

    if group_size is None:
        group_size = seed_group_limit(runs[0].model, per_seed[0].train,
                                      cfg.batch_size, device)
    group_size = min(group_size or len(seeds), len(seeds))
    trainer = _GroupTrainer(per_seed[0], method, cfg, device, callbacks,
                            compare_eval_modes,
                            method_hyperparameters(method,
                                                   hyperparameters or {}),
                            static, compile)
    trainer.train_all(runs, group_size)
    return [run.seed_result(num_parameters, group_size) for run in runs]


class _GroupTrainer:
    def __init__(self, splits, method, cfg, device, callbacks,
                 compare_eval_modes, hyperparameters: Hyperparameters,
                 static: Optional[tuple] = None,
                 compile: Optional[str] = None):
        self.splits, self.method, self.cfg = splits, method, cfg
        self.static, self.compile = static, compile
        self.device, self.callbacks = device, callbacks
        self.compare = compare_eval_modes
        self.hyperparameters = hyperparameters
        self.objective = METHODS[method].objective
        self.crit = Criterion(cfg.loss)

    def train_all(self, runs: List[_SeedRun], group_size: int):
        r"""Trains :obj:`runs` to the end, :obj:`group_size` seeds at a
        time, and closes their logs."""
        try:
            while True:
                active = [r for r in runs if not r.done(self.cfg)]
                if not active:
                    break
                first = min(r.next_epoch for r in active)
                group = [r for r in active if r.next_epoch == first]
                group = group[:group_size]  # the rest follow as their own
                later = [r.next_epoch for r in active if r.next_epoch > first]
                # Seeds left behind (an interrupted write) catch up first.
                until = min(later) - 1 if later else self.cfg.epochs
                self.train(group, until)
        finally:
            for run in runs:
                run.logger.close()

    def train(self, group: List[_SeedRun], until: int):
        r"""Trains :obj:`group` (all at the same epoch) until epoch
        :obj:`until`, or until one of its seeds stops (the caller then
        regroups the others)."""
        cfg = self.cfg
        stacked = StackedModel([r.model for r in group])
        if self.compile is not None:
            stacked.compile(self.compile)
        params = stacked.parameters()
        resumed = group[0].optimizer_state is not None
        optimizer, scheduler = optimizer_and_scheduler(
            SeedAdam, params, cfg,
            _stacked_optimizer_state([r.optimizer_state for r in group])
            if resumed else None, group[0].scheduler_state)
        noise = Noise([r.noise for r in group],
                      static=self.static is not None)
        epoch = group[0].next_epoch
        names = ', '.join(str(r.seed) for r in group)
        for r in group:
            r.logger.line(f'from epoch {epoch}: seeds {names} train as '
                          f'one model')
        while epoch <= until:
            tic = time.perf_counter()
            for r in group:
                r.generator.manual_seed(epoch_seed(r.seed, epoch))
                r.noise.manual_seed(noise_seed(r.seed, epoch))
            ctx = StepContext(epoch, self.hyperparameters)
            trained, skips = self._epoch(stacked, group, noise, ctx,
                                         optimizer, params)
            lr = step_scheduler(optimizer, scheduler)
            train_time = (time.perf_counter() - tic) / len(group)
            full_opt = optimizer.state_dict()
            sched_state = (scheduler.state_dict() if scheduler is not None
                           else None)
            stopped = False
            for s, run in enumerate(group):
                tic = time.perf_counter()
                stacked.load_into(s, run.model)
                run.skipped += skips
                rec = {'epoch': epoch, 'lr': lr, **trained[s],
                       **score_epoch(run.score, run.model, cfg.eval_mode,
                                     self.compare)}
                rec['time_s'] = train_time + time.perf_counter() - tic
                run.record(rec, run.model)
                run.logger.epoch(rec, cfg.epochs, self.splits.metric,
                                 run.tracker.best_val)
                run.optimizer_state = _seed_optimizer_state(full_opt, s)
                run.scheduler_state = sched_state
                run.checkpointer.save(run.checkpoint(
                    epoch, run.model, run.optimizer_state, sched_state,
                    {'streams': streams_of(self.static, self.compile)}))
                stopped |= run.tracker.stopped
            for run in group:
                for cb in self.callbacks:
                    cb(run.seed, epoch, run.history[-1])
            if stopped:
                return
            epoch += 1

    def _epoch(self, stacked: StackedModel, group, noise, ctx, optimizer,
               params):
        cfg, device = self.cfg, self.device
        S = len(group)
        stacked.train()
        loss_sum = torch.zeros(S, device=device)
        extra_sums: Dict[str, Tensor] = {}
        seen = steps = skipped = 0
        logits_all, ys_all = [], []
        for batches in zip(*[r.loader for r in group]):
            batches = [as_batch(b, device) for b in batches]
            n = batches[0].num_graphs
            if n < 2:
                skipped += 1
                continue
            data = union_of(seed_inputs(self.objective, batches, noise,
                                        ctx), self.static)
            noise.new_step()
            loss, logits, extras = stacked_train_step(
                stacked, data, self.objective, self.crit, ctx, noise,
                optimizer, params, cfg.clip_grad_norm)
            loss_sum += loss.detach() * n
            for key, value in extras.items():
                extra_sums[key] = (extra_sums.get(key, 0.0)
                                   + value.detach() * n)
            seen += n
            steps += 1
            logits_all.append(logits.detach())
            ys_all.append(data.y)
        if steps == 0:
            raise RuntimeError('No training batch with at least two samples: '
                               'the training split is too small')
        logits_all = torch.cat(logits_all, dim=1).cpu()
        ys_all = torch.cat(ys_all, dim=1).cpu()
        losses = (loss_sum / seen).tolist()
        extras = {k: (v / seen).tolist() for k, v in extra_sums.items()}
        records = []
        for s in range(S):
            rec = {'train_loss': losses[s],
                   'train_metric': compute_metric(
                       self.splits.metric, logits_all[s], ys_all[s],
                       self.splits.name)}
            for key, values in extras.items():
                rec[key] = values[s]
            records.append(rec)
        return records, skipped


def _fit_each(model_fn, per_seed, method, cfg, seeds, device, loader,
              ckpt_dir, resume, run_id, log_of, progress, verbose,
              callbacks, compare_eval_modes, reason,
              hyperparameters, pad, compile) -> List[FitResult]:
    results = []
    for seed, splits in zip(seeds, per_seed):
        cbs = [lambda epoch, rec, seed=seed, cb=cb: cb(seed, epoch, rec)
               for cb in callbacks]
        res = fit(model_fn, splits, method, cfg, seed=seed, device=device,
                  loader=loader,
                  checkpoint=ckpt_dir / f'seed{seed}.ckpt' if ckpt_dir
                  else None, resume=resume, run_id=run_id,
                  progress=progress, verbose=verbose,
                  log_file=log_of[seed], callbacks=cbs,
                  compare_eval_modes=compare_eval_modes,
                  hyperparameters=hyperparameters, pad=pad, compile=compile)
        res.extra.update(seed_batch=False, seed_batch_fallback=reason)
        results.append(res)
    return results


__all__ = ['fit_seeds', 'seed_batch_support', 'seed_group_limit',
           'CPU_GROUP_ELEMENTS', 'seed_inputs', 'noise_seed',
           'STREAMS', 'STATIC_STREAMS', 'streams_of', 'SeedAdam', 'clip_per_seed',
           'stacked_train_step']
