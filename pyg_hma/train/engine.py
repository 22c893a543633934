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
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data._io import UnreadableFileError, atomic_torch_save, torch_load
from .loaders import LoaderFactory, as_batch, get_loader_factory
from .methods import Criterion, StepContext, objective_for
from .metrics import compute_metric

# 2: plain tensors and containers only (loaded with weights_only=True).
CHECKPOINT_VERSION = 2


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
            :class:`~pyg_hma.train.methods.Criterion`).
        penalty_weight: IRM / V-REx penalty weight after annealing.
        penalty_anneal_epochs: epochs with penalty weight 1 first.
        drop_ratio: DropEdge / DropNode ratio.
        mixup_alpha: Manifold Mixup's Beta parameter.
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
    penalty_weight: float = 1.0
    penalty_anneal_epochs: int = 0
    drop_ratio: float = 0.2
    mixup_alpha: float = 1.0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f'epochs and batch_size must be positive (got '
                             f'{self.epochs}, {self.batch_size})')
        if self.patience is not None and self.patience < 1:
            raise ValueError(f'patience must be >= 1 or None (got '
                             f'{self.patience})')
        if self.loss not in ('ce', 'bce'):
            raise ValueError(f"loss must be 'ce' or 'bce' (got '{self.loss}')")
        if not 0.0 <= self.drop_ratio < 1.0:
            raise ValueError(f'drop_ratio must lie in [0, 1) (got '
                             f'{self.drop_ratio})')

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


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


# --------------------------------------------------------------------------
# Loops
# --------------------------------------------------------------------------

def _adam(params, **kwargs) -> torch.optim.Adam:
    # The fused kernel updates every parameter in one call (several times
    # faster per step for these small models); older torch builds lack it on
    # CPU, so fall back to the default implementation there.
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
    r"""Eval-mode logits and targets of a whole split (on the CPU)."""
    model.eval()
    logits, ys = [], []
    for batch in loader:
        batch = as_batch(batch, device)
        _new_step()
        logits.append(_kept(model(batch)))
        ys.append(batch.y)
    if not logits:
        return torch.empty(0), torch.empty(0)
    return torch.cat(logits).cpu(), torch.cat(ys).cpu()


def evaluate(model: nn.Module, loader, metric: str, device: torch.device,
             dataset: Optional[str] = None) -> float:
    logits, y = predict(model, loader, device)
    return compute_metric(metric, logits, y, dataset)


@dataclass
class FitResult:
    r"""Outcome of :func:`fit`."""
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
    extra: Dict[str, Any] = field(default_factory=dict)


def _format_epoch(rec: dict, epochs: int, metric: str) -> str:
    tests = ' '.join(f'{k} {v:.4f}' for k, v in rec['test'].items())
    extras = ''.join(f' {k} {v:.4g}' for k, v in rec.items()
                     if k in ('penalty', ))
    return (f"epoch {rec['epoch']:3d}/{epochs} loss {rec['train_loss']:.4f}"
            f"{extras} train_{metric} {rec['train_metric']:.4f} "
            f"val {rec['val']:.4f} {tests} lr {rec['lr']:.2e} "
            f"{rec['time_s']:.1f}s")


# Methods that rebuild the graphs of a batch (so a padded batch would lose
# its padding bookkeeping, and shapes change anyway).
_GRAPH_EDITING_METHODS = ('dropedge', 'dropnode')
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
        if method in _GRAPH_EDITING_METHODS:
            raise ValueError(f"pad: method '{method}' edits the graphs of "
                             f"each batch, which padding does not allow")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES} or None "
                         f"(got '{compile_mode}')")


def compile_model(model: nn.Module, mode: str = 'default',
                  dynamic: Optional[bool] = None) -> nn.Module:
    r"""Compiles :obj:`model` in place with ``nn.Module.compile`` (so its
    state-dict keys, and checkpoints, do not change) and returns it.

    Check a compiled padded setup with ``benchmarks/speed.py --check-static``:
    that check found the Inductor fault that ``masked_batch_norm`` now
    avoids (see its comment and ``docs/performance.md``).
    """
    model.compile(mode=mode, dynamic=dynamic)
    return model


def fit(model_fn: Callable[[], nn.Module], splits, method: str,
        cfg: TrainConfig, *, seed: int = 0, device: Any = 'cpu',
        loader: Any = 'pyg', pad: Optional[Sequence[int]] = None,
        compile: Optional[str] = None,
        checkpoint: Optional[os.PathLike] = None,
        resume: bool = False, run_id: Optional[dict] = None,
        progress: bool = False, verbose: bool = False,
        log_file: Optional[os.PathLike] = None,
        callbacks: Sequence[Callable[[int, dict], None]] = ()
        ) -> FitResult:
    r"""Trains and evaluates one model.

    Args:
        model_fn: builds the model (called right after seeding, so the
            initial weights depend on :obj:`seed` only).
        splits: a :class:`~pyg_hma.data.DatasetSplits`.
        method: a method name (see :mod:`pyg_hma.train.methods`).
        cfg: the optimisation protocol.
        seed: the run's seed.
        device: ``'cpu'``, ``'cuda'``, ``'auto'`` or a :class:`torch.device`.
        loader: ``'pyg'``, ``'device'`` or a loader factory (see
            :mod:`pyg_hma.train.loaders`).
        pad: ``(node_step, edge_step)``: pad every graph batch to node and
            edge counts that are multiples of these
            (:class:`~pyg_hma.data.padding.PaddedLoader`), so that a compiled
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
            checkpoint is written.
    """
    device = resolve_device(device) if not isinstance(
        device, torch.device) else device
    factory: LoaderFactory = get_loader_factory(loader)
    objective = objective_for(method)
    crit = Criterion(cfg.loss)
    metric = splits.metric
    ident = fingerprint({'method': method, 'seed': seed,
                         'cfg': cfg.to_dict(), 'run': run_id or {}})

    seed_everything(seed)
    model = model_fn().to(device)
    _check_static_options(model, method, pad, compile)
    if compile is not None:
        # Automatic dynamic shapes: the first shape is compiled static, a
        # second one recompiles with symbolic sizes (padded batches come in a
        # few shapes; with 'reduce-overhead' each gets its own CUDA graph).
        compile_model(model, compile)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
                 if cfg.lr_step else None)
    tracker = BestTracker(cfg.patience, cfg.warmup)
    history: List[dict] = []
    start_epoch, elapsed, skipped, resumed_from = 1, 0.0, 0, None

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        try:  # weights_only=True: a planted checkpoint cannot run code
            state = torch_load(ckpt_path, what='checkpoint')
        except UnreadableFileError as e:
            raise ValueError(
                f"Cannot resume from checkpoint '{ckpt_path}': {e.reason}. "
                f"Delete it or run without --resume to start over") from None
        if not isinstance(state, dict) or \
                state.get('version') != CHECKPOINT_VERSION or \
                state.get('fingerprint') != ident:
            raise ValueError(
                f"Checkpoint '{ckpt_path}' was written by a different run "
                f"configuration (or format); delete it or run without "
                f"--resume to start over")
        model.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        if scheduler is not None:
            scheduler.load_state_dict(state['scheduler'])
        tracker.load_state_dict(state['tracker'])
        history = state['history']
        elapsed, skipped = state['elapsed'], state['skipped_batches']
        start_epoch = resumed_from = state['epoch'] + 1
        _set_rng_state(state['rng'])

    generator = torch.Generator()

    def make_loader(split, **kwargs):
        out = factory(split, device=device, **kwargs)
        if pad is not None:
            from ..data.padding import PaddedLoader
            out = PaddedLoader(out, *pad)
        return out

    train_loader = make_loader(splits.train, batch_size=cfg.batch_size,
                               shuffle=True, generator=generator)
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    eval_loaders = {
        name: make_loader(split, batch_size=eval_bs, shuffle=False,
                          generator=None)
        for name, split in [('val', splits.val), *splits.tests.items()]
    }

    def log(line: str):
        if log_file is not None:
            with open(log_file, 'a') as f:
                f.write(line + '\n')
        if verbose:
            if bar is not None:
                bar.write(line)
            else:
                print(line, file=sys.stderr, flush=True)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.epochs, initial=start_epoch - 1, leave=False,
                   desc=f'{method} seed {seed}', dynamic_ncols=True)
    if resumed_from is not None:
        log(f'resumed from the checkpoint after epoch {resumed_from - 1}')

    epoch = start_epoch
    try:
        while epoch <= cfg.epochs and not tracker.stopped:
            tic = time.perf_counter()
            generator.manual_seed(epoch_seed(seed, epoch))
            ctx = StepContext(epoch, cfg.penalty_weight,
                              cfg.penalty_anneal_epochs, cfg.drop_ratio,
                              cfg.mixup_alpha)
            model.train()
            # Sums stay on the device: no host sync inside the epoch.
            loss_sum = torch.zeros((), device=device)
            extra_sums: Dict[str, Tensor] = {}
            seen, steps = 0, 0
            train_logits, train_ys = [], []
            for batch in train_loader:
                batch = as_batch(batch, device)
                n = batch.num_graphs
                if n < 2:
                    # BatchNorm over graphs (virtual node, HMA) needs two;
                    # OGB's example skips such batches too.
                    skipped += 1
                    continue
                optimizer.zero_grad(set_to_none=True)
                if compile is not None:
                    _new_step()
                loss, logits, extras = objective(model, batch, crit, ctx)
                loss.backward()
                if cfg.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                optimizer.step()
                loss_sum += loss.detach() * n
                for key, value in extras.items():
                    extra_sums[key] = extra_sums.get(key, 0.0) + \
                        value.detach() * n
                seen += n
                steps += 1
                train_logits.append(_kept(logits))
                train_ys.append(batch.y)
            if scheduler is not None:
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
            else:
                lr = optimizer.param_groups[0]['lr']
            if steps == 0:
                raise RuntimeError('No training batch with at least two '
                                   'samples: the training split is too small')

            rec = {'epoch': epoch, 'lr': lr,
                   'train_loss': float(loss_sum) / seen,
                   'train_metric': compute_metric(
                       metric, torch.cat(train_logits).cpu(),
                       torch.cat(train_ys).cpu(), splits.name)}
            for key, value in extra_sums.items():
                rec[key] = float(value) / seen
            scores = {name: evaluate(model, dl, metric, device, splits.name)
                      for name, dl in eval_loaders.items()}
            rec['val'] = scores.pop('val')
            rec['test'] = scores
            rec['time_s'] = time.perf_counter() - tic
            elapsed += rec['time_s']
            history.append(rec)
            tracker.update(epoch, rec['val'], rec)
            log(_format_epoch(rec, cfg.epochs, metric))

            if ckpt_path is not None:
                atomic_torch_save({
                    'version': CHECKPOINT_VERSION, 'fingerprint': ident,
                    'epoch': epoch, 'model': model.state_dict(),
                    'optimizer': optimizer.state_dict(),
                    'scheduler': (scheduler.state_dict()
                                  if scheduler is not None else None),
                    'tracker': tracker.state_dict(), 'history': history,
                    'elapsed': elapsed, 'skipped_batches': skipped,
                    'rng': _rng_state(),
                }, ckpt_path)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(val=f"{rec['val']:.3f}",
                                best=f'{tracker.best_val:.3f}')
            for cb in callbacks:
                cb(epoch, rec)
            epoch += 1
    finally:
        if bar is not None:
            bar.close()

    best, selected = tracker.best_record, tracker.best_epoch
    if best is None and history:
        # No finite validation score at all (e.g. ROC-AUC on a one-class
        # subset): report the last epoch rather than nothing.
        best, selected = history[-1], history[-1]['epoch']
    best = best or {}
    return FitResult(
        history=history, selected_epoch=selected,
        val=best.get('val', float('nan')),
        test=dict(best.get('test', {})), epochs_run=len(history),
        stopped_early=tracker.stopped, wall_time_s=elapsed,
        skipped_batches=skipped,
        num_parameters=sum(p.numel() for p in params),
        resumed_from=resumed_from)
