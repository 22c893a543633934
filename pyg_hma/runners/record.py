r"""The result record of a finished run: its per-seed JSON file."""
from __future__ import annotations

import datetime
from typing import Any, Dict

import torch

from ..files import atomic_torch_save
from ..methods import METHODS, method_label
from ..train import distributed
from ..train.engine import device_name, select_by_eval_mode
from ..train.results import RESULT_FORMAT, RESULT_KIND, write_json
from .plan import Job


def finish(job: Job, splits, res, built: dict, seconds: float) -> dict:
    r"""The record of a finished run, written (atomically) as its JSON; the
    checkpoint goes unless ``--keep-checkpoints``."""
    spec, stem = job.spec, job.stem
    rec = record(job, splits, res, built, seconds)
    rec.update(job.meta)
    if not distributed.is_main_process():  # rank 0 writes
        return rec
    if spec.save_model and res.best_state is not None:
        atomic_torch_save(res.best_state, stem.with_suffix('.model.pt'))
    write_json(stem.with_suffix('.json'), rec)
    ckpt = stem.with_suffix('.ckpt')
    if ckpt.exists() and not spec.keep_checkpoints:
        ckpt.unlink()
    return rec


def run_config(job: Job, built: dict) -> Dict[str, Any]:
    r"""The ``config`` of :obj:`job`'s record: everything that shapes the
    run besides its dataset, backbone, method and seed (what
    :func:`~pyg_hma.train.results.config_id` tells apart). :obj:`built`:
    the model's ``out_channels``, ``input_shape`` and ``hma_kwargs``."""
    uses_hma = METHODS[job.method].uses_hma
    spec = job.spec
    config = {
        'train': job.train_record, 'backbone_kwargs': job.bb_kwargs,
        'hma': built['hma_kwargs'] if uses_hma else None,
        'hma_variant': METHODS[job.method].hma,
        'momentum': job.proto.momentum if uses_hma else None,
        'dataset_kwargs': job.proto.dataset_kwargs, 'loader': spec.loader,
        'pad': spec.pad, 'compile': spec.compile,
        'quick': job.run_id['quick'], 'out_channels': built['out_channels'],
        'input_shape': built['input_shape'],
    }
    if job.run_id.get('seed_batched'):
        config['seed_batched'] = True
    if job.run_id.get('ddp'):
        config['ddp_world_size'] = distributed.world_size()
    return config


def record(job: Job, splits, res, built: dict, seconds: float) -> dict:
    r"""The result record of :obj:`job` trained to :obj:`res` (a
    :class:`~pyg_hma.train.FitResult`)."""
    method = job.method
    primary = 'test' if 'test' in res.test else next(iter(res.test))
    by_eval_mode = None
    if res.history and 'by_eval_mode' in res.history[0]:
        at_selected = next(r for r in res.history
                           if r['epoch'] == res.selected_epoch)
        by_eval_mode = select_by_eval_mode(res.history)
        for mode, chosen in by_eval_mode.items():
            chosen['at_run_selection'] = at_selected['by_eval_mode'][mode]
    return {
        'kind': RESULT_KIND, 'format': RESULT_FORMAT,
        'dataset': job.dataset, 'backbone': job.backbone, 'method': method,
        'method_label': method_label(method), 'seed': job.seed,
        'metric': splits.metric, 'primary_test': primary,
        'eval_mode': job.cfg.eval_mode,
        'val': res.val, 'test': res.test,
        'by_eval_mode': by_eval_mode,
        'selected_epoch': res.selected_epoch, 'epochs_run': res.epochs_run,
        'stopped_early': res.stopped_early,
        'wall_time_s': res.wall_time_s,
        'process_time_s': seconds,
        'resumed_from_epoch': res.resumed_from,
        'skipped_batches': res.skipped_batches,
        'num_parameters': res.num_parameters,
        'device': str(job.device), 'device_name': device_name(job.device),
        'threads': torch.get_num_threads(),
        'seed_batch': res.extra.get('seed_batch_group'),
        'config': run_config(job, built),
        'run_fingerprint': job.ident,
        'dataset_info': {'sizes': splits.sizes(),
                         'num_features': splits.num_features,
                         'num_classes': splits.num_classes,
                         'protocol': splits.info.get('protocol')},
        'protocol_note': job.proto.note,
        'history': res.history,
        'finished_at': datetime.datetime.now().isoformat(timespec='seconds'),
    }
