r"""One runner invocation from start to end: plan, take the output folder,
refuse (or move aside) what it would replace, train, summarise."""
from __future__ import annotations

from typing import List, Mapping, Optional

import torch

from ..methods import method_label
from ..train.engine import checkpoint_fingerprint, resolve_device
from ..train.results import load_paper, write_summary
from ..train import distributed
from ..train.seed_batch import streams_of
from .execute import SplitCache, execute, submit_to_ray, units
from .outputs import (SUPERSEDED, OutputConflictError, OutputFolder,
                      describe_conflicts, describe_unreadable)
from .plan import Cell, Job, Printer, plan
from .protocol import QUICK_NOTE, DatasetProtocol
from .ray_backend import RayRuns, check_reachable, run_device
from .spec import RunSpec, check_names, output_root


def run_benchmark(spec: RunSpec, runner: str,
                  protocols: Mapping[str, DatasetProtocol]) -> List[dict]:
    r"""Runs everything :obj:`spec` asks of runner :obj:`runner`; returns
    the result records.

    Everything is planned first; before anything trains, the output folder
    is locked and checked: an existing result or checkpoint that the
    invocation would replace is refused up front
    (:class:`~pyg_hma.runners.outputs.OutputConflictError`), or moved aside
    with :obj:`spec.force <RunSpec.force>`. Raises
    :class:`~pyg_hma.registry.UnknownNameError` or :class:`ValueError` for
    names and settings that :func:`~pyg_hma.runners.spec.check_names`
    refuses."""
    check_names(spec, protocols)
    if spec.threads and spec.threads > 0:
        torch.set_num_threads(spec.threads)
    device = (resolve_device(spec.device) if spec.ray is None
              else run_device(spec.device, spec.ray_gpus_per_run))
    out_root = output_root(spec, runner)
    say = Printer(spec.quiet or not distributed.is_main_process())
    cells = plan(spec, runner, protocols, out_root, device, say)
    if spec.ray is not None:  # a bounded wait, before the folder is made
        check_reachable(spec.ray, spec.ray_timeout)

    with (OutputFolder(out_root) if distributed.is_main_process()
          else distributed.ReadOnlyFolder()) as output:
        conflicts = [f for cell in cells for job in cell.jobs
                     for f in output.conflicts(
                         job.stem, job.ident,
                         _checkpoint_fingerprints(job, spec.compare_evals),
                         spec.resume)]
        if conflicts:
            what, listing = describe_conflicts(conflicts, out_root)
            if output.unreadable and not spec.force:
                raise OutputConflictError(describe_unreadable(
                    output.unreadable, out_root, out_root / SUPERSEDED),
                    conflicts)
            if not spec.force:
                raise OutputConflictError(
                    f"--out {out_root}: {what} would be replaced ({listing}): "
                    f"finished results of another configuration, or not "
                    f"resumed. Use --resume to keep and continue runs of "
                    f"this configuration, --force to move the others aside "
                    f"(into {out_root / SUPERSEDED}), or another --out",
                    conflicts)
            moved = output.move_aside(conflicts)
            say(f'[{runner}] --force: moved {what} aside into {moved}')
        paper = load_paper()
        splits = SplitCache()
        all_records: List[dict] = []
        on_ray = None if spec.ray is None else submit_to_ray(
            [u for cell in cells for u in units(cell.jobs, spec.seed_batch)],
            spec)
        try:
            for cell in cells:
                all_records += _run_cell(cell, spec, paper, say, splits,
                                         on_ray)
        finally:
            if on_ray is not None:
                on_ray.close()
    return all_records


def _checkpoint_fingerprints(job: Job, compare_evals: bool) -> List[str]:
    r"""The checkpoint fingerprints a run of :obj:`job` may have written:
    :func:`~pyg_hma.train.seed_batch.fit_seeds`'s (its streams), or
    :func:`~pyg_hma.train.fit`'s when the model or method cannot be
    seed-batched or the run is distributed."""
    def of(streams):
        return checkpoint_fingerprint(
            job.method, job.seed, job.cfg, job.run_id, compare_evals,
            streams, hyperparameters=job.hyperparameters)
    if job.spec.ddp:
        return [of(None)]
    return [of(None), of(streams_of(job.spec.pad, job.spec.compile))]


def _run_cell(cell: Cell, spec: RunSpec, paper, say: Printer,
              splits: SplitCache, on_ray: Optional[RayRuns] = None
              ) -> List[dict]:
    work = units(cell.jobs, spec.seed_batch,
                 None if spec.seed_batch_given else spec.jobs)
    for job, rec in execute(work, max(1, spec.jobs), spec.threads, splits,
                            on_ray):
        cell.finished[job.seed, job.method] = rec
        say(f"  {method_label(job.method)} seed {job.seed}: val "
            f"{rec['val']:.4f} {rec['primary_test']} "
            f"{rec['test'][rec['primary_test']]:.4f} (best epoch "
            f"{rec['selected_epoch']} of {rec['epochs_run']}, "
            f"{rec['wall_time_s']:.0f} s"
            + (f", in a group of {rec['seed_batch']}" if rec.get('seed_batch')
               else '') + ')')
    # Seed-major order whatever order the runs finished in.
    records = [cell.finished[seed, method] for seed in cell.seeds
               for method in cell.methods if (seed, method) in cell.finished]
    if not records:  # every run of the cell skipped (--skip-committed)
        return records
    if not distributed.is_main_process():  # rank 0 writes
        return records
    md = write_summary(cell.folder, records, paper)
    print(md + (f'\n{QUICK_NOTE}\n' if cell.quick else ''), flush=True)
    return records
