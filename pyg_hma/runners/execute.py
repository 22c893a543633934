r"""Training the jobs of an invocation: one after the other in this process,
in a pool of worker processes or as tasks on a Ray cluster, singly or as
seed-batched groups."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, \
    Tuple

import torch

from ..methods import METHODS
from ..models import build_model
from .outputs import attempt_log
from ..train import distributed
from ..train.engine import fit
from ..train.results import write_json
from ..loader import random_subset
from .plan import Job
from .ray_backend import RayRuns
from .record import finish
from .spec import RunSpec


class SplitCache:
    r"""The dataset splits of the runs trained in one process, loaded once
    per (dataset, seed) and kept for the next run of that split only (one
    dataset in memory, not all seeds). An invocation owns one, and so does
    every unit a worker process trains."""
    def __init__(self):
        self._key: Optional[tuple] = None
        self._splits = None

    def __call__(self, job: Job):
        r"""The splits of :obj:`job` (its quick subset with ``--quick``)."""
        from ..data import load_dataset
        spec = job.spec
        key = (job.dataset, job.seed, spec.root, spec.mirror, spec.exported,
               repr(job.proto.dataset_kwargs), repr(job.quick))
        if key != self._key:
            self._key, self._splits = None, None  # free the previous one
            splits = load_dataset(job.dataset, root=spec.root,
                                  mirror=spec.mirror, seed=job.seed,
                                  exported=spec.exported,
                                  **job.proto.dataset_kwargs)
            if job.quick:
                splits = _quick_subset(splits, job.quick, job.seed)
            self._key, self._splits = key, splits
        return self._splits


def _quick_subset(splits, quick: Mapping[str, Any], seed: int):
    tests = {k: random_subset(v, quick['eval_size'], seed)
             for k, v in splits.tests.items()}
    return dataclasses.replace(
        splits, train=random_subset(splits.train, quick['train_size'], seed),
        val=random_subset(splits.val, quick['eval_size'], seed),
        test=tests if isinstance(splits.test, dict) else tests['test'])


def units(jobs: Sequence[Job], seed_batch: int,
          workers: Optional[int] = None) -> List[List[Job]]:
    r"""The jobs in training units: single runs, or groups of up to
    :obj:`seed_batch` seeds of one method (in seed order). With
    :obj:`workers` (the default group size and ``--jobs`` > 1), groups are
    made smaller when that gives every worker a unit: 10 seeds of one
    method on 2 workers train as two groups of 5."""
    if seed_batch <= 1:
        return [[job] for job in jobs]
    by_method: Dict[str, List[Job]] = {}
    for job in jobs:
        by_method.setdefault(job.method, []).append(job)
    if by_method and workers and workers > len(by_method):
        per_method = -(-workers // len(by_method))
        longest = max(len(group) for group in by_method.values())
        seed_batch = max(1, min(seed_batch, -(-longest // per_method)))
    return [group[i:i + seed_batch] for group in by_method.values()
            for i in range(0, len(group), seed_batch)]


def execute(work: Sequence[List[Job]], workers: int, threads: int,
            splits: SplitCache, on_ray: Optional[RayRuns] = None
            ) -> Iterator[Tuple[Job, dict]]:
    r"""Yields ``(job, record)`` for every job of every unit of
    :obj:`work`: in this process one unit after the other (loading splits
    through :obj:`splits`), with :obj:`workers` > 1 in that many worker
    processes (``spawn``, so CUDA works in them), or as the tasks of
    :obj:`on_ray` (submitted with :func:`submit_to_ray`), in the order they
    finish.

    Every run seeds itself and loads its own split, so a run's numbers do
    not depend on which process trains it or on what ran before it there.
    """
    if on_ray is not None:
        for pairs in on_ray.results(work):
            yield from pairs
        return
    if workers <= 1 or len(work) <= 1:
        for unit in work:
            yield from run_group(unit, splits)
        return
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(work)),
                                mp_context=mp.get_context('spawn'),
                                initializer=_init_worker,
                                initargs=(threads, )) as pool:
        futures = [pool.submit(run_group, unit) for unit in work]
        try:
            for future in cf.as_completed(futures):
                yield from future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def submit_to_ray(work: Sequence[List[Job]], spec: RunSpec) -> RayRuns:
    r"""Every unit of :obj:`work` (all of the invocation's, so that the
    cluster runs as many at once as it can) as a task on the Ray cluster of
    :obj:`spec.ray <RunSpec.ray>` (:mod:`~pyg_hma.runners.ray_backend`)."""
    return RayRuns(work, run_group, name_of=unit_name,
                   on_result=write_records, address=spec.ray,
                   cpus_per_run=spec.ray_cpus_per_run or 1,
                   gpus_per_run=spec.ray_gpus_per_run or 0,
                   threads=spec.threads, quiet=spec.quiet,
                   verbose=spec.verbose, connect_timeout=spec.ray_timeout)


def unit_name(unit: Sequence[Job]) -> str:
    r"""``DATASET/BACKBONE/METHOD/seedS`` (``seedS+seedT`` for a seed
    group): a unit's name on Ray."""
    return '/'.join(unit[0].stem.parts[-4:-1]
                    + ('+'.join(job.stem.name for job in unit), ))


def write_records(pairs: Sequence[Tuple[Job, dict]]):
    r"""Writes the records a Ray task returned as the runs' JSON files in
    the driver's output folder (the worker's own copy may be elsewhere)."""
    for job, rec in pairs:
        job.stem.parent.mkdir(parents=True, exist_ok=True)
        write_json(job.stem.with_suffix('.json'), rec)


def _init_worker(threads: int):
    if threads and threads > 0:
        torch.set_num_threads(threads)


def run_group(jobs: Sequence[Job], splits: Optional[SplitCache] = None
              ) -> List[Tuple[Job, dict]]:
    r"""Trains the runs of :obj:`jobs` (one method, several seeds) as one
    seed-batched model (:func:`~pyg_hma.train.seed_batch.fit_seeds`), or
    the one run of a unit alone; writes and returns their records.
    :obj:`splits` loads the data (``None``: a cache of this unit's own).

    Every run trains with :func:`~pyg_hma.train.seed_batch.fit_seeds`, a
    run alone as a group of one: a seed's run never depends on how many
    seeds share its group (``tests/test_invariance.py``). Only ``--ddp``
    trains one run at a time with :func:`~pyg_hma.train.fit`."""
    splits = splits or SplitCache()
    if jobs[0].spec.ddp:
        return [(jobs[0], run_job(jobs[0], splits))]
    job = jobs[0]
    per_seed = [splits(j) for j in jobs]
    model_fn, built = _model_for(job, per_seed[0])
    job.stem.parent.mkdir(parents=True, exist_ok=True)
    curves = {j.seed: _curves(j) for j in jobs}
    start = time.perf_counter()
    try:
        results = _fit_group(jobs, per_seed, model_fn, curves)
    finally:
        for cs in curves.values():
            for c in cs:
                c.close()
    seconds = (time.perf_counter() - start) / len(jobs)
    return [(j, finish(j, s, res, built, seconds))
            for j, s, res in zip(jobs, per_seed, results)]


def run_job(job: Job, splits: SplitCache) -> dict:
    r"""Trains one run, writes its JSON (atomically) and returns it."""
    with distributed.main_process_first():  # rank 0 fills the cache
        data = splits(job)
    model_fn, built = _model_for(job, data)
    job.stem.parent.mkdir(parents=True, exist_ok=True)
    curves = _curves(job)
    start = time.perf_counter()
    try:
        res = _fit_job(job, data, model_fn, curves)
    finally:
        for c in curves:
            c.close()
    return finish(job, data, res, built, time.perf_counter() - start)


def _curves(job: Job) -> list:
    """The run's TensorBoard writer (``--tensorboard``), if asked for:
    ``DIR/DATASET/BACKBONE/METHOD/seedS``."""
    root = job.spec.tensorboard
    if root is None or not distributed.is_main_process():
        return []
    from ..train.curves import TensorBoardCurves
    where = Path(*job.stem.parts[-4:])
    return [TensorBoardCurves(Path(root) / where)]


def _checkpoint_path(job: Job) -> Optional[Path]:
    if job.spec.no_checkpoints:
        return None
    return job.stem.with_suffix('.ckpt')


def _fit_job(job: Job, splits, model_fn, curves):
    spec = job.spec
    return fit(model_fn, splits, job.method, job.cfg, seed=job.seed,
               device=job.device, loader=spec.loader, pad=spec.pad,
               compile=spec.compile,
               checkpoint=_checkpoint_path(job),  # settled up front
               resume=spec.resume, run_id=job.run_id,
               progress=job.progress, verbose=spec.verbose,
               log_file=attempt_log(job.stem),  # a new log per attempt
               compare_eval_modes=spec.compare_evals,
               callbacks=curves, hyperparameters=job.hyperparameters,
               ddp=spec.ddp)


def _fit_group(jobs, splits, model_fn, curves):
    from ..train.seed_batch import fit_seeds
    job, spec = jobs[0], jobs[0].spec

    def to_curves(seed, epoch, rec):
        for c in curves[seed]:
            c(epoch, rec)
    checkpoint = _checkpoint_path(job)
    return fit_seeds(
        model_fn, splits, job.method, job.cfg, seeds=[j.seed for j in jobs],
        device=job.device, loader=spec.loader,
        checkpoint_dir=checkpoint.parent if checkpoint else None,
        log_files={j.seed: attempt_log(j.stem) for j in jobs},
        resume=spec.resume, run_id=job.run_id, verbose=spec.verbose,
        compare_eval_modes=spec.compare_evals, callbacks=[to_curves],
        hyperparameters=job.hyperparameters, pad=spec.pad,
        compile=spec.compile,
        # --seed-batch N trains N seeds together, as asked; by default the
        # group is capped where large batches make it slower on a CPU.
        group_size=len(jobs) if spec.seed_batch_given else None)


def _model_for(job: Job, splits):
    r"""``(model_fn, what it builds)`` of a run on :obj:`splits`."""
    num_tasks = splits.num_tasks
    if job.cfg.loss == 'ce' and num_tasks != 1:
        raise ValueError(f'{job.dataset}: cross entropy needs one label per '
                         f'sample, found {num_tasks}')
    if METHODS[job.method].uses_hma and num_tasks != 1:
        raise ValueError(f'{job.dataset} has {num_tasks} tasks per sample; '
                         f'HMA supports single-task classification only')
    built = dict(
        out_channels=num_tasks if job.cfg.loss == 'bce' else None,
        input_shape=splits.input_shape,
        # Validation inside HMAReadout costs device syncs every step; the
        # engine's inputs are well formed.
        hma_kwargs={**job.proto.hma, 'check_inputs': False})

    def model_fn():
        return build_model(job.backbone, job.method,
                           num_classes=splits.num_classes,
                           num_features=splits.num_features,
                           input_shape=built['input_shape'],
                           out_channels=built['out_channels'],
                           backbone_kwargs=job.bb_kwargs,
                           hma_kwargs=built['hma_kwargs'],
                           momentum=job.proto.momentum)
    return model_fn, built


