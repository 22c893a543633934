r"""The training engine shared by every benchmark runner.

:func:`fit` trains one model with one method and one seed: seeding, the
train/eval loop, early stopping with best-validation selection, metrics,
per-epoch logging, a checkpoint after every epoch and exact resumption.

Protocol, as in OGB's examples and CIGA:

* every epoch trains on the training split, then evaluates the validation
  split and every test split (HMA in eval mode, so nothing is written to its
  queue);
* the reported test score is the one of the epoch with the best validation
  score (the first such epoch: later ties do not replace it);
* with early stopping, an epoch without a strict improvement of the
  validation score counts towards the patience only after the warm-up epochs
  (CIGA's ``--pretrain``), and training stops once the count reaches the
  patience.

Resumption is exact on the CPU: the shuffling generator is re-seeded from
``(seed, epoch)`` before every epoch, and the checkpoint holds the model
(with HMA's momentum encoder and queue buffers), the optimizer and scheduler,
the Python/NumPy/torch RNG states, the epoch, the early-stopping state and
the history. A run interrupted after epoch :math:`k` and resumed therefore
ends with the same numbers as an uninterrupted one.

The protocol (:class:`TrainConfig`) lives in :mod:`pyg_hma.train.config`,
what a run saves and resumes from (:class:`Checkpointer`, the fingerprints,
:class:`BestTracker`, :class:`FitResult`, :class:`RunProgress`) in
:mod:`pyg_hma.train.checkpoint`; both are re-exported here.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple)

import numpy as np
import torch
from torch import Tensor, nn

from ..loader import (LoaderFactory, PaddedLoader, as_batch,
                      get_loader_factory)
from ..methods import (METHODS, Criterion, StepContext,
                       method_hyperparameters)
from ..nn import HMAReadout
from .checkpoint import (CHECKPOINT_VERSION, BestTracker, Checkpointer,
                         FitResult, RunProgress, _rng_state, _set_rng_state,
                         checkpoint_fingerprint, fingerprint,
                         optimizer_and_scheduler, step_scheduler,
                         train_record)
from .config import EVAL_MODES, TrainConfig
from .metrics import compute_metric
from .distributed import (DistributedRun, RankLoader,
                          check_options as check_ddp_options)


# --------------------------------------------------------------------------
# Seeding, devices, RNG state
# --------------------------------------------------------------------------

def seed_everything(seed: int):
    r"""Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    r"""The shuffling seed of an epoch: a function of ``(seed, epoch)``
    only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def resolve_device(device: Optional[str] = None) -> torch.device:
    r"""``None``/``'auto'``: CUDA when available, else the CPU."""
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f"Device '{device}' was requested but CUDA is not "
                           f"available; use --device cpu")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    import platform
    return (f'cpu ({platform.processor() or platform.machine()}, '
            f'{torch.get_num_threads()} threads)')


def own_rng(device: torch.device):
    r"""A context in which the global generators (the CPU's, and
    :obj:`device`'s when it is a GPU) are restored on exit, so that what runs
    inside never moves the training stream."""
    devices = [device] if device.type == 'cuda' else []
    return torch.random.fork_rng(devices=devices,
                                 device_type=device.type if devices
                                 else 'cuda')



# --------------------------------------------------------------------------
# Loops
# --------------------------------------------------------------------------

def fused_adam(params, **kwargs) -> torch.optim.Adam:
    r"""Adam with the fused kernel, which updates every parameter in one call
    (several times faster per step for these small models, on the CPU too);
    older torch builds lack it on the CPU, where this falls back to the
    default implementation. :obj:`kwargs` go to :class:`torch.optim.Adam`."""
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, **kwargs)


def _new_step():
    # With CUDA graphs (compile mode 'reduce-overhead') the outputs of a
    # replay live in memory that the next replay reuses: mark where a step
    # begins, and keep only copies of outputs (see _kept).
    mark = getattr(torch.compiler, 'cudagraph_mark_step_begin', None)
    if mark is not None:
        mark()


def _kept(t: Tensor) -> Tensor:
    return t.detach().clone()


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device):
    r"""Eval-mode logits and targets of a whole split (on the CPU). From a
    :class:`~.distributed.RankLoader` (a distributed run), those of every
    rank, in the order of one process."""
    model.eval()
    logits, ys = [], []
    for batch in loader:
        batch = as_batch(batch, device)
        _new_step()
        logits.append(_kept(model(batch)))
        ys.append(batch.y)
    out = ((torch.cat(logits).cpu(), torch.cat(ys).cpu()) if logits
           else (torch.empty(0), torch.empty(0)))
    if isinstance(loader, RankLoader):
        out = tuple(loader.gather(t) for t in out)
    return out


def evaluate(model: nn.Module, loader, metric: str, device: torch.device,
             dataset: Optional[str] = None) -> float:
    logits, y = predict(model, loader, device)
    return compute_metric(metric, logits, y, dataset)


def _hma_readouts(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if isinstance(m, HMAReadout)]


def batch_dependent(model: nn.Module) -> bool:
    r"""Whether :obj:`model`'s eval predictions can depend on the other
    samples of a batch: it holds an :class:`~pyg_hma.HMAReadout` that
    attends across datapoints (``abd=True``). For any other model the three
    :data:`EVAL_MODES` give the same scores."""
    return any(r.abd for r in _hma_readouts(model))


@contextlib.contextmanager
def eval_mode_of(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    r"""Sets the ``inference`` of every HMA readout in :obj:`model` for eval
    mode :obj:`mode` (``'independent'``, else ``'batch'``) and restores it
    afterwards. The batch order of ``'shuffled'`` and ``'order'`` is the
    loader's business (see :class:`SplitScorer`)."""
    if mode not in EVAL_MODES:
        raise ValueError(f"eval mode must be one of {EVAL_MODES} (got "
                         f"'{mode}')")
    readouts = _hma_readouts(model)
    saved = [r.inference for r in readouts]
    for r in readouts:
        r.inference = 'independent' if mode == 'independent' else 'batch'
    try:
        yield model
    finally:
        for r, inference in zip(readouts, saved):
            r.inference = inference


class SplitScorer:
    r"""Scores the validation split and every test split of a run under an
    eval mode.

    ``'order'`` and ``'independent'`` read the splits in dataset order;
    ``'shuffled'`` reads each split in one random order per run (drawn from
    :obj:`seed`, the same at every epoch), so eval batches mix classes like
    training batches do and a run's scores stay deterministic.

    Args:
        make_loader: ``make_loader(split, batch_size=, shuffle=,
            generator=)``.
        splits: the run's :class:`~pyg_hma.data.DatasetSplits`.
        batch_size: eval batch size.
        seed: the run's seed.
        device: where the model runs.
    """
    def __init__(self, make_loader: Callable, splits, batch_size: int,
                 seed: int, device: torch.device):
        self._make_loader = make_loader
        self._splits = [('val', splits.val), *splits.tests.items()]
        self._batch_size = batch_size
        self._shuffle_seed = epoch_seed(seed, 0)  # training epochs are 1, 2..
        self._generator = torch.Generator()
        self._loaders: Dict[bool, Dict[str, Any]] = {}
        self._metric, self._name = splits.metric, splits.name
        self._device = device

    def _loaders_for(self, shuffle: bool) -> Dict[str, Any]:
        if shuffle not in self._loaders:  # built on first use
            self._loaders[shuffle] = {
                name: self._make_loader(
                    split, batch_size=self._batch_size, shuffle=shuffle,
                    generator=self._generator if shuffle else None)
                for name, split in self._splits}
        return self._loaders[shuffle]

    def __call__(self, model: nn.Module, mode: str) -> Dict[str, float]:
        r"""``{'val': score, test split: score, ...}`` under :obj:`mode`."""
        shuffle = mode == 'shuffled'
        scores = {}
        with eval_mode_of(model, mode):
            for name, loader in self._loaders_for(shuffle).items():
                if shuffle:
                    self._generator.manual_seed(self._shuffle_seed)
                scores[name] = evaluate(model, loader, self._metric,
                                        self._device, self._name)
        return scores


def select_by_eval_mode(history: Sequence[dict]) -> Dict[str, dict]:
    r"""Model selection as if validation had been scored under each eval
    mode, from a history recorded with ``compare_eval_modes=True``.

    Returns ``{mode: {'selected_epoch', 'val', 'test'}}``: the first epoch
    with the best validation score under that mode, and its scores under
    that mode. Early stopping followed the run's own ``eval_mode``, so the
    other modes choose among the epochs that run trained.
    """
    out: Dict[str, dict] = {}
    for rec in history:
        for mode, scores in rec.get('by_eval_mode', {}).items():
            best = out.get(mode)
            if best is None or scores['val'] > best['val'] or (
                    math.isnan(best['val']) and not math.isnan(scores['val'])):
                out[mode] = {'selected_epoch': rec['epoch'],
                             'val': scores['val'],
                             'test': dict(scores['test'])}
    return out


def _format_epoch(rec: dict, epochs: int, metric: str) -> str:
    tests = ' '.join(f'{k} {v:.4f}' for k, v in rec['test'].items())
    extras = ''.join(f' {k} {v:.4g}' for k, v in rec.items()
                     if k in ('penalty', ))
    return (f"epoch {rec['epoch']:3d}/{epochs} loss {rec['train_loss']:.4f}"
            f"{extras} train_{metric} {rec['train_metric']:.4f} "
            f"val {rec['val']:.4f} {tests} lr {rec['lr']:.2e} "
            f"{rec['time_s']:.1f}s")


COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune')


def _check_static_options(model: nn.Module, method: str, pad, compile_mode):
    if pad is not None:
        if len(pad) != 2 or min(pad) < 1:
            raise ValueError(f'pad must be (node_step, edge_step) with '
                             f'positive steps, got {pad!r}')
        encoder = getattr(model, 'encoder', model)
        if not getattr(encoder, 'supports_padding', False):
            raise ValueError(f'pad: the backbone {type(encoder).__name__} '
                             f'does not support padded batches (the GNNs of '
                             f'pyg_hma.models do)')
        if METHODS[method].edits_graphs:  # padding bookkeeping would break
            raise ValueError(f"pad: method '{method}' edits the graphs of "
                             f"each batch, which padding does not allow")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES} or None "
                         f"(got '{compile_mode}')")


def compile_model(model: nn.Module, mode: str = 'default',
                  dynamic: Optional[bool] = None) -> nn.Module:
    r"""Compiles :obj:`model` in place with ``nn.Module.compile`` (so its
    state-dict keys, and checkpoints, do not change) and returns it.

    Check a compiled padded setup with
    ``tests/test_padding.py::test_static_path_trains_like_eager_on_device``
    (``PYG_HMA_TEST_DEVICE=cuda`` on a GPU): that check found the Inductor
    fault that the masked BatchNorm of
    :func:`~pyg_hma.nn.stacked.seed_batch_norm` now avoids (see its comment
    and ``docs/contributing/performance-history.md``).
    """
    model.compile(mode=mode, dynamic=dynamic)
    return model



class EpochLogger:
    r"""One line per epoch to the run's log file, to the console
    (:obj:`verbose`) and a tqdm bar (:obj:`progress`)."""
    def __init__(self, log_file: Optional[os.PathLike], verbose: bool,
                 progress: bool, total: int, done: int, desc: str):
        self.log_file, self.verbose = log_file, verbose
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=done, leave=False,
                            desc=desc, dynamic_ncols=True)

    def line(self, text: str):
        if self.log_file is not None:
            with open(self.log_file, 'a') as f:
                f.write(text + '\n')
        if self.verbose:
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, file=sys.stderr, flush=True)

    def epoch(self, rec: dict, epochs: int, metric: str, best_val: float):
        self.line(_format_epoch(rec, epochs, metric))
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(val=f"{rec['val']:.3f}",
                                 best=f'{best_val:.3f}')

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train_step(model: nn.Module, batch, objective, crit: Criterion,
               ctx: StepContext, optimizer: torch.optim.Optimizer,
               params: Sequence[Tensor], clip_grad_norm: Optional[float],
               mark_step: bool = False, loss_weight: float = 1.0
               ) -> Tuple[Tensor, Tensor, dict]:
    r"""One optimisation step on :obj:`batch` (already on the device): the
    objective's ``(loss, logits, extras)``, backward, gradient clipping to
    :obj:`clip_grad_norm` (``None``: off) and the optimizer step; returns
    what the objective returned. Nothing waits for the device.
    :obj:`mark_step` first marks a new CUDA-graph step (for models compiled
    with ``'reduce-overhead'``). The gradient is the one of
    :obj:`loss_weight` times the loss (a rank's share of a distributed
    batch, see :meth:`~.distributed.DistributedRun.loss_weight`)."""
    optimizer.zero_grad(set_to_none=True)
    if mark_step:
        _new_step()
    loss, logits, extras = objective(model, batch, crit, ctx)
    (loss if loss_weight == 1.0 else loss * loss_weight).backward()
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, clip_grad_norm)
    optimizer.step()
    return loss, logits, extras


def train_epoch(model: nn.Module, loader, objective, crit: Criterion,
                ctx: StepContext, optimizer: torch.optim.Optimizer,
                params: Sequence[Tensor], cfg: TrainConfig,
                device: torch.device, metric: str, dataset: str,
                mark_steps: bool = False,
                run: Optional[DistributedRun] = None) -> Tuple[dict, int]:
    r"""One pass over the training split. Returns the epoch's record
    (``train_loss``, ``train_metric`` and the objective's extras, as means
    over graphs) and the number of batches skipped for holding a single
    graph (BatchNorm over graphs needs two; OGB's example skips them too).
    With :obj:`run` (a distributed run) :obj:`loader` gives this rank's
    slice of each global batch and the record is the global batches'.
    """
    model.train()
    # Sums stay on the device: no host sync inside the epoch.
    loss_sum = torch.zeros((), device=device)
    extra_sums: Dict[str, Tensor] = {}
    seen, steps, skipped = 0, 0, 0
    train_logits, train_ys = [], []
    for batch in loader:
        batch = as_batch(batch, device)
        n = batch.num_graphs
        total = n if run is None else run.total(n)
        if total < 2:
            skipped += 1
            continue
        loss, logits, extras = train_step(
            model, batch, objective, crit, ctx, optimizer, params,
            cfg.clip_grad_norm, mark_steps,
            1.0 if run is None else run.loss_weight(n, total))
        loss_sum += loss.detach() * n
        for key, value in extras.items():
            extra_sums[key] = extra_sums.get(key, 0.0) + value.detach() * n
        seen += n
        steps += 1
        train_logits.append(_kept(logits))
        train_ys.append(batch.y)
    if steps == 0:
        raise RuntimeError('No training batch with at least two samples: '
                           'the training split is too small')
    train_logits, train_ys = torch.cat(train_logits), torch.cat(train_ys)
    if run is not None:  # the union of the ranks' batches
        loss_sum, seen = run.sum(loss_sum), run.total(seen)
        extra_sums = {k: run.sum(v) for k, v in extra_sums.items()}
        train_logits, train_ys = run.gather(train_logits), run.gather(
            train_ys)
        skipped += loader.skipped
    rec = {'train_loss': float(loss_sum) / seen,
           'train_metric': compute_metric(
               metric, train_logits.cpu(), train_ys.cpu(), dataset)}
    for key, value in extra_sums.items():
        rec[key] = float(value) / seen
    return rec, skipped


def score_epoch(score: SplitScorer, model: nn.Module, primary: str,
                compare: bool) -> dict:
    r"""``{'val', 'test'}`` under the run's eval mode :obj:`primary`, plus
    ``'by_eval_mode'`` under every mode when :obj:`compare` (scored once
    for models whose predictions do not depend on the batch)."""
    modes = (primary, ) + (tuple(m for m in EVAL_MODES if m != primary)
                           if compare else ())
    dependent = batch_dependent(model)
    by_mode: Dict[str, Dict[str, float]] = {}
    for mode in modes:
        by_mode[mode] = (score(model, mode) if dependent or not by_mode
                         else by_mode[primary])
    split = lambda s: (s['val'], {k: v for k, v in s.items()  # noqa: E731
                                  if k != 'val'})
    val, test = split(by_mode[primary])
    rec = {'val': val, 'test': test}
    if compare:
        rec['by_eval_mode'] = {
            mode: dict(zip(('val', 'test'), split(s)))
            for mode, s in by_mode.items()}
    return rec



def open_log(at: RunProgress, log_file: Optional[os.PathLike],
             verbose: bool, progress: bool, epochs: int,
             desc: str) -> EpochLogger:
    r"""The :class:`EpochLogger` of a run at :obj:`at` (a line says when it
    resumed from a checkpoint)."""
    logger = EpochLogger(log_file, verbose, progress, epochs,
                         at.next_epoch - 1, desc)
    if at.resumed_from is not None:
        logger.line(f'resumed from the checkpoint after epoch '
                    f'{at.resumed_from - 1}')
    return logger


def _prepared_model(model_fn: Callable[[], nn.Module], seed: int,
                    device: torch.device, method: str, pad, compile,
                    run: Optional[DistributedRun]):
    # fit's model (built right after seeding), the module that trains
    # (DDP's wrapper in a distributed run) and the trainable parameters.
    seed_everything(seed)
    model = model_fn().to(device)
    _check_static_options(model, method, pad, compile)
    trained_model = model if run is None else run.prepare(model)
    if compile is not None:
        # Automatic dynamic shapes: the first shape is compiled static, a
        # second one recompiles with symbolic sizes (padded batches come in a
        # few shapes; with 'reduce-overhead' each gets its own CUDA graph).
        compile_model(model, compile)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, trained_model, params


def _joined(ddp: bool, device: torch.device, method: str, loader: Any,
            pad, compile) -> Tuple[Optional[DistributedRun], torch.device]:
    # With ddp: the process group this process joins, and its device.
    if not ddp:
        return None, device
    check_ddp_options(method, loader, pad, compile)
    run = DistributedRun.join(device)
    return run, run.device


def _run_loaders(factory: LoaderFactory, loader: Any, pad,
                 run: Optional[DistributedRun], splits, cfg: TrainConfig,
                 seed: int, device: torch.device
                 ) -> Tuple[Any, torch.Generator, SplitScorer]:
    # fit's training loader, the generator that shuffles it (re-seeded from
    # (seed, epoch) every epoch) and the split scorer.
    generator = torch.Generator()

    def make_loader(split, **kwargs):
        out = factory(split, device=device, **kwargs)
        if pad is not None:
            out = PaddedLoader(out, *pad)
        return out

    train_loader = (make_loader if run is None else run.loader_factory(
        loader, train=True))(splits.train, batch_size=cfg.batch_size,
                             shuffle=True, generator=generator)
    score = SplitScorer(
        make_loader if run is None else run.loader_factory(loader,
                                                           train=False),
        splits, cfg.eval_batch_size or cfg.batch_size, seed, device)
    return train_loader, generator, score


def fit(model_fn: Callable[[], nn.Module], splits, method: str,
        cfg: TrainConfig, *, seed: int = 0, device: Any = 'cpu',
        loader: Any = 'pyg', pad: Optional[Sequence[int]] = None,
        compile: Optional[str] = None,
        checkpoint: Optional[os.PathLike] = None,
        resume: bool = False, run_id: Optional[dict] = None,
        progress: bool = False, verbose: bool = False,
        log_file: Optional[os.PathLike] = None,
        callbacks: Sequence[Callable[[int, dict], None]] = (),
        compare_eval_modes: bool = False,
        hyperparameters: Optional[Mapping[str, Any]] = None,
        ddp: bool = False
        ) -> FitResult:
    r"""Trains and evaluates one model.

    Args:
        model_fn: builds the model (called right after seeding, so the
            initial weights depend on :obj:`seed` only).
        splits: a :class:`~pyg_hma.data.DatasetSplits`.
        method: a name of :data:`pyg_hma.methods.METHODS`.
        cfg: the optimisation protocol.
        seed: the run's seed.
        device: ``'cpu'``, ``'cuda'``, ``'auto'`` or a :class:`torch.device`.
        loader: ``'pyg'``, ``'device'`` or a loader factory (see
            :mod:`pyg_hma.loader.factories`).
        pad: ``(node_step, edge_step)``: pad every graph batch to node and
            edge counts that are multiples of these
            (:class:`~pyg_hma.loader.PaddedLoader`), so that a compiled
            model sees a few static shapes. Without dropout the results equal
            the unpadded ones; dropout draws differ.
        compile: ``torch.compile`` the model with this mode (``'default'``,
            ``'reduce-overhead'``: CUDA graphs on a GPU, best with
            :obj:`pad`; ``'max-autotune'``), in place (see
            :func:`compile_model`); checkpoints are unchanged.
        checkpoint: file written (atomically) after every epoch.
        resume: continue from :obj:`checkpoint` when it exists.
        run_id: JSON-able description of the run; a checkpoint written for
            a different description is refused on resume.
        progress: show a tqdm bar over the epochs.
        verbose: print one line per epoch.
        log_file: append one line per epoch to this file.
        callbacks: called as ``cb(epoch, record)`` after each epoch's
            checkpoint is written (on every rank of a distributed run, with
            the same record).
        compare_eval_modes: also score every epoch under the other
            :data:`EVAL_MODES` and record them in the history
            (``record['by_eval_mode']``; see :func:`select_by_eval_mode`).
            Selection and early stopping follow ``cfg.eval_mode``. Costs two
            more evaluations per epoch for batch-dependent models only.
        hyperparameters: the method's hyperparameters by name (e.g.
            ``{'penalty_weight': 100.0}``; the defaults of
            :func:`~pyg_hma.methods.method_hyperparameters` for the rest).
            Names of other methods are allowed: they only enter the
            fingerprint (see :func:`train_record`).
        ddp: train on every rank of the ``torchrun`` process group, which
            this process joins if needed (see
            :mod:`pyg_hma.train.distributed` for what is global): each rank
            calls :func:`fit` with the same arguments; only rank 0 writes
            the checkpoint and the log, and every rank returns the same
            result.
    """
    device = resolve_device(device) if not isinstance(
        device, torch.device) else device
    factory: LoaderFactory = get_loader_factory(loader)
    objective = METHODS[method].objective
    own = method_hyperparameters(method, hyperparameters or {})
    crit = Criterion(cfg.loss)
    run, device = _joined(ddp, device, method, loader, pad, compile)
    if run is not None and not run.is_main:  # rank 0 writes
        log_file, verbose, progress = None, False, False
    checkpointer = Checkpointer(checkpoint, checkpoint_fingerprint(
        method, seed, cfg, run_id, compare_eval_modes,
        hyperparameters=hyperparameters),
        writes=run is None or run.is_main)

    model, trained_model, params = _prepared_model(
        model_fn, seed, device, method, pad, compile, run)
    at = RunProgress(cfg)
    state = checkpointer.load() if resume else None
    if at.resume(state, model):
        _set_rng_state(state['rng'])
    optimizer, scheduler = optimizer_and_scheduler(
        fused_adam, params, cfg, at.optimizer_state, at.scheduler_state)
    if run is not None:
        run.check_resumed_epoch(at.next_epoch)
    train_loader, generator, score = _run_loaders(
        factory, loader, pad, run, splits, cfg, seed, device)
    logger = open_log(at, log_file, verbose, progress, cfg.epochs,
                      f'{method} seed {seed}')
    try:
        while at.next_epoch <= cfg.epochs and not at.tracker.stopped:
            epoch, tic = at.next_epoch, time.perf_counter()
            generator.manual_seed(epoch_seed(seed, epoch))
            if run is not None:
                run.reseed(seed, epoch)
            trained, skips = train_epoch(
                trained_model, train_loader, objective, crit,
                StepContext(epoch, own), optimizer, params, cfg, device,
                splits.metric, splits.name, mark_steps=compile is not None,
                run=run)
            at.skipped += skips
            lr = step_scheduler(optimizer, scheduler)
            # Scoring never draws from training's stream: what it draws (and
            # --compare-evals) leaves the next epoch's dropout masks as is.
            with own_rng(device):
                scores = score_epoch(score, model, cfg.eval_mode,
                                     compare_eval_modes)
            rec = {'epoch': epoch, 'lr': lr, **trained, **scores}
            rec['time_s'] = time.perf_counter() - tic
            at.record(rec, model)
            logger.epoch(rec, cfg.epochs, splits.metric, at.tracker.best_val)
            checkpointer.save(at.checkpoint(
                epoch, model, optimizer.state_dict(),
                scheduler.state_dict() if scheduler is not None else None,
                _rng_state()))
            for cb in callbacks:
                cb(epoch, rec)
    finally:
        logger.close()
    return at.result(model, sum(p.numel() for p in params))


__all__ = ['fit', 'TrainConfig', 'EVAL_MODES', 'COMPILE_MODES', 'FitResult',
           'BestTracker', 'Checkpointer', 'CHECKPOINT_VERSION', 'RunProgress',
           'EpochLogger', 'SplitScorer', 'checkpoint_fingerprint',
           'fingerprint', 'train_record', 'seed_everything', 'epoch_seed',
           'resolve_device', 'device_name', 'own_rng', 'fused_adam',
           'predict', 'evaluate', 'batch_dependent', 'eval_mode_of',
           'select_by_eval_mode', 'compile_model', 'train_step',
           'train_epoch', 'score_epoch', 'open_log']
