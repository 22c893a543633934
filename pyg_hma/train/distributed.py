r"""One run on several processes (GPUs or machines) with
:mod:`torch.distributed`: ``fit(..., ddp=True)`` and the runners' ``--ddp``.

Start one process per GPU (or per CPU share) the way ``torchrun`` does
(environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc-per-node 4 benchmarks/ogb_mol.py --dataset ogbg-molhiv --ddp

What is global (the same as one process training on the protocol's batches):

* **batches**: every rank draws the same global batch order from the same
  per-epoch generator (so the order is the one-process order) and trains on
  its contiguous slice of each global batch (:class:`RankLoader`); a global
  batch with fewer graphs than ranks is skipped (counted in
  ``skipped_batches``, as a one-graph batch is in one process);
* **gradients**: averaged by :class:`~torch.nn.parallel.DistributedDataParallel`
  over the ranks, with each rank's mean loss weighted by its share of the
  global batch, so the step is the one of the global batch's mean loss;
* **BatchNorm**: every BatchNorm layer becomes a
  :class:`DistributedBatchNorm` whose training statistics are the global
  batch's (one all-gather per layer, with gradients; works with gloo on the
  CPU, which :class:`torch.nn.SyncBatchNorm` does not);
* **HMA's attention across datapoints**: the readout's SMA block attends
  over the batch tokens of all ranks, gathered with their gradients
  (:attr:`~pyg_hma.HMAReadout.abd_across_ranks`); the queue write gathers
  every rank's keys as before, so all ranks hold the same queue;
* **metrics**: every eval split is scored in whole protocol batches dealt
  round-robin to the ranks, and the predictions of all ranks are gathered
  (in the one-process order) before the metric is computed, so every rank
  takes the same early-stopping and selection decisions; the training loss
  and metric are those of the union of the ranks' batches.

What is local: dropout and other random draws (each rank re-seeds its RNG
from ``(seed, epoch, rank)`` at every epoch, which also keeps ``--resume``
exact), and the mean of a BCE loss with unlabelled targets (each rank's mean
is weighted by its number of graphs, not of labelled targets).

Only rank 0 writes checkpoints, logs and results; on ``--resume`` every rank
reads rank 0's checkpoint, so the output folder must be shared by the ranks
(one machine, or a shared file system). Not supported yet (refused with a
message): several runs at once (``--jobs``), seed batching, padded or
compiled batches, custom loader factories, and the objectives whose loss is
not a mean over samples (IRM, V-REx, Manifold Mixup).
"""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import (Any, Callable, Iterator, List, Mapping, Optional,
                    Tuple)

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.utils import all_gather_with_grad, distributed_world_size

#: The environment variables ``torchrun`` sets for every process.
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                'MASTER_PORT')


def launched_by_torchrun() -> bool:
    r"""Whether this process was started the way ``torchrun`` starts one."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def init_process_group() -> bool:
    r"""Joins the process group described by the ``torchrun`` environment
    (gloo for CPU tensors, NCCL for CUDA tensors). Returns whether this call
    initialised it (``False``: it already was)."""
    if dist.is_initialized():
        return False
    if not dist.is_available():
        raise RuntimeError('--ddp needs torch.distributed, which this torch '
                           'build lacks; install a build with it')
    if not launched_by_torchrun():
        raise RuntimeError(
            f"--ddp needs the environment torchrun sets "
            f"({', '.join(TORCHRUN_ENV)}); start the command with "
            f"'torchrun --nproc-per-node N ...'")
    backend = ('cpu:gloo,cuda:nccl' if torch.cuda.is_available()
               and dist.is_nccl_available() else 'gloo')
    dist.init_process_group(backend)
    return True


@contextlib.contextmanager
def process_group(enabled: bool) -> Iterator[None]:
    r"""Inside: this process belongs to the ``torchrun`` process group (when
    :obj:`enabled`); the group is left at the exit if this context joined
    it."""
    joined = init_process_group() if enabled else False
    try:
        yield
    finally:
        if joined:
            dist.destroy_process_group()


def rank() -> int:
    r"""This process's rank (0 without a process group)."""
    return dist.get_rank() if distributed_world_size() > 1 else 0


def world_size() -> int:
    r"""The number of ranks (1 without a process group)."""
    return distributed_world_size()


def is_main_process() -> bool:
    r"""Whether this process writes (rank 0, or the only process)."""
    return rank() == 0


def barrier():
    r"""Waits for every rank (nothing without a process group)."""
    if distributed_world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    r"""Rank 0 runs the body first (e.g. processes a dataset into the
    cache), the other ranks after it (reading the cache)."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


class ReadOnlyFolder(contextlib.AbstractContextManager):
    r"""The output folder as the ranks other than rank 0 see it: rank 0
    locks it and settles its conflicts; they neither lock nor write."""
    def conflicts(self, *args, **kwargs) -> list:
        return []

    def __exit__(self, *exc):
        return None


# --------------------------------------------------------------------------
# BatchNorm over the global batch
# --------------------------------------------------------------------------

class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""Batch normalisation whose training statistics are those of the
    union of every rank's batch: each rank contributes its row count, mean
    and sum of squared deviations (one differentiable all-gather), combined
    exactly as Chan et al.'s parallel variance. Any input of shape
    :math:`(N, C, *)`. In eval mode, or without a process group of more than
    one rank, it is :class:`torch.nn.BatchNorm1d` (or ``2d``, ``3d``). The
    state-dict keys are those of the layer it replaces (see
    :func:`convert_batch_norm`).

    Unlike :class:`torch.nn.SyncBatchNorm` it runs on the CPU (gloo) as well
    as on GPUs; the GNNs' masked BatchNorm of padded batches is not
    distributed (``--pad`` is refused with ``--ddp``).
    """
    def _check_input_dim(self, input: Tensor):
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got '
                             f'{input.dim()}D input)')

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or distributed_world_size() == 1:
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = input.numel() // input.size(1)
        mean = input.mean(dims)
        m2 = (input - mean.view(shape)).square().sum(dims)
        stats = torch.cat([mean.new_full((1, ), float(count)), mean, m2])
        rows = all_gather_with_grad(stats)  # [world, 1 + 2C]
        counts, means, m2s = rows[:, :1], rows[:, 1:1 + mean.numel()], \
            rows[:, 1 + mean.numel():]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (m2s + counts * (means - mean).square()).sum(0) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (self.momentum if self.momentum is not None
                            else 1.0 / float(self.num_batches_tracked))
                self.running_mean.lerp_(mean.detach(), momentum)
                unbiased = var.detach() * total / (total - 1).clamp(min=1.0)
                self.running_var.lerp_(unbiased, momentum)
        out = (input - mean.view(shape)) * torch.rsqrt(var + self.eps).view(
            shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_batch_norm(module: nn.Module) -> nn.Module:
    r"""Replaces every BatchNorm layer of :obj:`module` (in place, also in
    HMA's momentum copy) by a :class:`DistributedBatchNorm` holding the same
    parameters and buffers; returns :obj:`module` (or the new layer when
    :obj:`module` is one)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
            not isinstance(module, DistributedBatchNorm):
        new = DistributedBatchNorm(module.num_features, module.eps,
                                   module.momentum, module.affine,
                                   module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.requires_grad_(module.weight.requires_grad
                           if module.affine else False)
        new.train(module.training)
        return new.to(next(iter(module.state_dict().values())).device)
    for name, child in module.named_children():
        setattr(module, name, convert_batch_norm(child))
    return module


# --------------------------------------------------------------------------
# Batches of a rank
# --------------------------------------------------------------------------

def global_order(size: int, shuffle: bool,
                 generator: Optional[torch.Generator]) -> Tensor:
    r"""The order in which one process's loader reads a split: the
    permutation :class:`torch.utils.data.RandomSampler` draws from
    :obj:`generator` after the base seed torch's ``DataLoader`` draws from
    it (as :class:`~pyg_hma.loader.DeviceGraphLoader` does), or
    the dataset order."""
    if not shuffle:
        return torch.arange(size)
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(size, generator=generator)


class RankLoader:
    r"""The batches of one rank, from the global batches of one process's
    loader (the same order, see :func:`global_order`).

    Args:
        dataset: the split.
        batch_size: the protocol's (global) batch size.
        shuffle: draw a new order at each pass from :obj:`generator`.
        generator: CPU generator, re-seeded by the engine every epoch.
        collate: ``collate(dataset, index) -> batch``.
        run: the distributed run (its rank, number of ranks and gather).
        split_batches: ``True`` (training): each global batch is cut into
            :obj:`world_size` contiguous slices (sizes differ by at most
            one) and this rank gets its slice; global batches with fewer
            samples than ranks are skipped (counted in :obj:`skipped`).
            ``False`` (evaluation): whole global batches are dealt
            round-robin, batch :math:`j` to rank :math:`j \bmod W`.
    """
    def __init__(self, dataset, batch_size: int, shuffle: bool,
                 generator: Optional[torch.Generator],
                 collate: Callable[[Any, Tensor], Any],
                 run: 'DistributedRun', split_batches: bool):
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.generator = shuffle, generator
        self.collate = collate
        self.run = run
        self.rank, self.world_size = run.rank, run.world_size
        self.split_batches = split_batches
        #: Global batches skipped in the last pass (fewer samples than ranks).
        self.skipped = 0
        #: Positions, in the one-process order, of the rows of the last pass.
        self.positions = torch.empty(0, dtype=torch.long)

    def _indices(self) -> Iterator[Tuple[Tensor, Tensor]]:
        order = global_order(len(self.dataset), self.shuffle, self.generator)
        position = torch.arange(order.numel())
        self.skipped = 0
        for j, start in enumerate(range(0, order.numel(), self.batch_size)):
            part = slice(start, start + self.batch_size)
            chunk, where = order[part], position[part]
            if self.split_batches:
                if chunk.numel() < max(2, self.world_size):
                    self.skipped += 1
                    continue
                yield (torch.tensor_split(chunk, self.world_size)[self.rank],
                       torch.tensor_split(where, self.world_size)[self.rank])
            elif j % self.world_size == self.rank:
                yield chunk, where

    def __iter__(self) -> Iterator[Any]:
        positions: List[Tensor] = []
        for index, where in self._indices():
            positions.append(where)
            yield self.collate(self.dataset, index)
        self.positions = (torch.cat(positions) if positions else
                          torch.empty(0, dtype=torch.long))

    def gather(self, rows: Tensor) -> Tensor:
        r"""The rows of every rank's last pass (one per sample, e.g.
        predictions), in the one-process order, on the CPU."""
        return self.run.gather(rows, self.positions).cpu()

    def __len__(self) -> int:
        batches = -(-len(self.dataset) // self.batch_size)
        if self.split_batches:
            return batches
        return len(range(self.rank, batches, self.world_size))


def _pyg_collate(dataset, index: Tensor):
    from torch_geometric.data.data import BaseData
    samples = [dataset[int(i)] for i in index]
    if isinstance(samples[0], BaseData):
        from torch_geometric.data import Batch
        return Batch.from_data_list(samples)
    return torch.utils.data.default_collate(samples)


class _DeviceCollate:
    # One device-resident copy of a graph split, gathered by index.
    def __init__(self, device: torch.device):
        self.device, self.loaders = device, {}

    def __call__(self, dataset, index: Tensor):
        from ..loader.factories import _is_graph_dataset
        if not _is_graph_dataset(dataset):
            return _pyg_collate(dataset, index)
        key = id(dataset)
        if key not in self.loaders:
            from ..loader.device import DeviceGraphLoader
            self.loaders[key] = DeviceGraphLoader(
                dataset, batch_size=1, shuffle=False, device=self.device)
        return self.loaders[key].collate(index)


# --------------------------------------------------------------------------
# The engine's view of the ranks
# --------------------------------------------------------------------------

#: Methods whose loss is not a mean over the samples of a batch.
_COUPLED_OBJECTIVES = ('irm', 'vrex', 'mmixup')


def check_options(method: str, loader: Any, pad, compile_mode):
    r"""Raises :class:`ValueError` for what ``fit(..., ddp=True)`` does not
    support."""
    if method in _COUPLED_OBJECTIVES:
        raise ValueError(f"ddp: method '{method}' computes its loss over the "
                         f"whole batch (not a mean over samples), which is "
                         f"not distributed yet; train it in one process")
    if loader not in ('pyg', 'device'):
        raise ValueError("ddp: only the 'pyg' and 'device' loaders can be "
                         "split over ranks; pass loader='pyg' or 'device'")
    if pad is not None or compile_mode is not None:
        raise ValueError('ddp: padded or compiled batches are not '
                         'distributed yet; drop pad/compile')


def check_arguments(options: Mapping[str, Any]) -> Optional[str]:
    r"""The first runner option (of the parsed command line
    :obj:`options`) that does not combine with ``--ddp``, as one line;
    ``None`` when there is none."""
    if (options.get('jobs') or 1) > 1:
        return ('--ddp trains one run on all ranks; it does not combine with '
                '--jobs > 1 (drop --jobs)')
    if (options.get('seed_batch') or 1) > 1:
        return '--ddp does not combine with --seed-batch > 1 yet'
    if options.get('pad') or options.get('compile'):
        return '--ddp does not combine with --pad or --compile yet'
    if not launched_by_torchrun():
        return ("--ddp needs the environment torchrun sets; start the command "
                "with 'torchrun --nproc-per-node N ...'")
    bad = [m for m in (options.get('method') or [])
           if m in _COUPLED_OBJECTIVES]
    if bad:
        return (f"--ddp does not support {', '.join(bad)} yet (their loss is "
                f"not a mean over samples); train them without --ddp")
    return None


class DistributedRun:
    r"""What :func:`~pyg_hma.train.fit` does differently on each rank of a
    distributed run (built by :meth:`join`).

    Args:
        device: this rank's device (``cuda:LOCAL_RANK`` for CUDA).
    """
    def __init__(self, device: torch.device):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device
        self.is_main = self.rank == 0

    @classmethod
    def join(cls, device: torch.device) -> 'DistributedRun':
        r"""Joins the ``torchrun`` process group (if not yet) and pins a
        CUDA device to the rank's ``LOCAL_RANK``."""
        init_process_group()
        if device.type == 'cuda' and device.index is None:
            device = torch.device('cuda', int(os.environ.get('LOCAL_RANK',
                                                             0)))
        if device.type == 'cuda':
            torch.cuda.set_device(device)
        return cls(device)

    def prepare(self, model: nn.Module) -> nn.Module:
        r"""Makes :obj:`model` (on this rank's device) global: BatchNorm
        over the global batch, HMA's attention across every rank's batch.
        Returns the :class:`~torch.nn.parallel.DistributedDataParallel`
        wrapper to train with (evaluate and save :obj:`model` itself)."""
        from ..nn import HMAReadout
        convert_batch_norm(model)
        for module in model.modules():
            if isinstance(module, HMAReadout):
                module.abd_across_ranks = True
        ids = [self.device.index] if self.device.type == 'cuda' else None
        # The buffers (BatchNorm statistics, HMA's queue) are equal on every
        # rank by construction: no broadcast before each forward.
        no_sync = ({'forward_sync_buffers': False} if 'forward_sync_buffers'
                   in inspect.signature(nn.parallel.DistributedDataParallel)
                   .parameters else {'broadcast_buffers': False})
        return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                   **no_sync)

    def loader_factory(self, loader: str, train: bool) -> Callable:
        r"""``make(split, batch_size=, shuffle=, generator=, device=)``
        giving this rank's :class:`RankLoader` of a split: slices of every
        global batch (:obj:`train`) or whole batches round-robin."""
        collate = (_pyg_collate if loader == 'pyg'
                   else _DeviceCollate(self.device))

        def make(split, *, batch_size: int, shuffle: bool,
                 generator: Optional[torch.Generator] = None, device=None):
            return RankLoader(split, batch_size, shuffle, generator, collate,
                              self, train)
        return make

    def reseed(self, seed: int, epoch: int):
        r"""Seeds this rank's torch RNG (dropout, random edits) from
        ``(seed, epoch, rank)``: distinct draws on every rank, and an exact
        ``--resume``."""
        torch.manual_seed(int(np.random.SeedSequence(
            [seed, epoch, self.rank]).generate_state(1)[0]))

    def total(self, count: int) -> int:
        r"""The sum of :obj:`count` over the ranks."""
        t = torch.tensor([count], device=self.device)
        dist.all_reduce(t)
        return int(t)

    def loss_weight(self, count: int, total: int) -> float:
        r"""The weight of this rank's mean loss over its :obj:`count`
        samples that makes the gradient DDP averages the one of the mean
        over the :obj:`total` samples of the global batch."""
        return self.world_size * count / total

    def sum(self, value: Tensor) -> Tensor:
        r"""The sum of :obj:`value` over the ranks (a new tensor)."""
        value = value.detach().clone()
        dist.all_reduce(value)
        return value

    def gather(self, rows: Tensor, positions: Optional[Tensor] = None
               ) -> Tensor:
        r"""Every rank's :obj:`rows` (ranks may hold none), in rank order,
        or sorted by their :obj:`positions` in the one-process order."""
        from ..nn.utils import gather_from_all_ranks
        rows = self._shaped_like_rank0(rows)
        if positions is None:
            return gather_from_all_ranks(rows)[0]
        rows, positions = gather_from_all_ranks(
            rows, positions.to(rows.device))
        return rows[positions.argsort()]

    def _shaped_like_rank0(self, rows: Tensor) -> Tensor:
        # A rank without rows holds a bare empty tensor: give it rank 0's
        # trailing shape and dtype so that the gather can pad it.
        dtypes = (torch.float32, torch.float64, torch.float16,
                  torch.bfloat16, torch.int64, torch.int32, torch.bool)
        head = torch.zeros(8, dtype=torch.long, device=self.device)
        if self.is_main:
            if rows.dim() > 6 or rows.dtype not in dtypes:
                raise ValueError(f'cannot gather rows of shape '
                                 f'{list(rows.shape)} and dtype {rows.dtype}')
            head[0], head[1] = rows.dim(), dtypes.index(rows.dtype)
            head[2:1 + rows.dim()] = torch.tensor(rows.shape[1:])
        dist.broadcast(head, 0)
        if rows.numel() == 0:
            trailing = head[2:1 + int(head[0])].tolist()
            rows = torch.empty([0] + trailing, dtype=dtypes[int(head[1])])
        return rows.to(self.device)

    def check_resumed_epoch(self, epoch: int):
        r"""Raises unless every rank resumes after the same epoch."""
        low = torch.tensor([epoch], device=self.device)
        high = low.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if int(low) != int(high):
            raise RuntimeError(
                f'ddp: the ranks found different checkpoints (epochs '
                f'{int(low)} to {int(high)}); every rank must read rank 0\'s '
                f'checkpoint: put --out on a file system all ranks share')


__all__ = [
    'DistributedBatchNorm',
    'DistributedRun',
    'RankLoader',
    'ReadOnlyFolder',
    'barrier',
    'check_arguments',
    'check_options',
    'convert_batch_norm',
    'global_order',
    'init_process_group',
    'is_main_process',
    'launched_by_torchrun',
    'main_process_first',
    'process_group',
    'rank',
    'world_size',
]
