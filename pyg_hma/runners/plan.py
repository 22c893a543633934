r"""Planning an invocation: its cells (one per dataset and backbone) and
their jobs (one per method and seed), before anything trains."""
from __future__ import annotations

import dataclasses
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..methods import METHODS, hyperparameter_names, method_label
from ..models import BACKBONES, backbone_label
from ..registry import UnknownNameError
from ..train import distributed
from ..train.engine import TrainConfig, fingerprint, train_record
from ..train.results import (ENGINE_VERSION, package_versions,
                             read_result, read_runs, source_commit)
from .protocol import DatasetProtocol
from .spec import RunSpec


class Printer:
    r"""Progress lines to stderr, unless :obj:`quiet`."""
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, *lines: str):
        if not self.quiet:
            for line in lines:
                print(line, file=sys.stderr, flush=True)


@dataclass
class Job:
    r"""One (dataset, backbone, method, seed) run, self-contained so that a
    worker process can run it."""
    runner: str
    dataset: str
    backbone: str
    bb_kwargs: Dict[str, Any]
    method: str
    seed: int
    cfg: TrainConfig
    hyperparameters: Dict[str, Any]  # the methods', by name
    proto: DatasetProtocol
    quick: Optional[Dict[str, Any]]
    device: torch.device
    spec: RunSpec
    stem: Path
    run_id: Dict[str, Any]
    ident: str
    progress: bool
    meta: Dict[str, Any]

    @property
    def train_record(self) -> Dict[str, Any]:
        r"""The run's ``train`` configuration as recorded and fingerprinted
        (:func:`~pyg_hma.train.engine.train_record`)."""
        return train_record(self.cfg, self.hyperparameters)


@dataclass
class Cell:
    r"""One (dataset, backbone) of an invocation: its runs to train, the
    finished runs it keeps, and where its summary goes."""
    folder: Path
    seeds: List[int]
    methods: List[str]
    quick: Optional[Dict[str, Any]]
    jobs: List[Job] = field(default_factory=list)
    finished: Dict[Tuple[int, str], dict] = field(default_factory=dict)


def plan(spec: RunSpec, runner: str,
         protocols: Mapping[str, DatasetProtocol], out_root: Path,
         device: torch.device, say: Printer) -> List[Cell]:
    r"""The cells of the invocation with their jobs; writes nothing. With
    :obj:`spec.resume <RunSpec.resume>`, finished runs of the same
    configuration are kept instead of planned; with
    :obj:`spec.skip_committed <RunSpec.skip_committed>`, runs that have a
    row there are left out."""
    workers = max(1, spec.jobs)
    # Epoch bars in this process only (a Ray task's would go to its log).
    progress = not spec.quiet and sys.stderr.isatty() and spec.ray is None
    versions, commit = package_versions(), source_commit()
    settings = spec.settings
    committed = _committed_runs(spec.skip_committed)
    if not spec.seed_batch_given and spec.seed_batch == 1 and spec.ddp:
        say(f'[{runner}] note: --ddp trains one run at a time (seed '
            f'batching does not combine with it yet)')
    cells = []
    kept: List[Tuple[Path, dict]] = []  # finished runs --resume keeps
    for dataset in spec.datasets:
        proto = protocols[dataset]
        if spec.momentum_given:
            proto = proto.replace(momentum=spec.momentum)
        if settings['hma']:
            proto = proto.replace(hma={**proto.hma, **settings['hma']})
        quick = proto.quick_settings() if spec.quick else None
        methods = list(spec.methods or proto.methods)
        if 'all' in methods:
            methods = list(proto.table_methods)
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise UnknownNameError(f"unknown method(s) {bad}; choose from "
                                   f"{', '.join(METHODS)} or 'all'")
        cfg = dataclasses.replace(proto.train, **{
            **_quick_part(quick, TrainConfig.__dataclass_fields__),
            **settings['train']})
        hyperparameters = {
            **proto.method_hyperparameters,
            **_quick_part(quick, hyperparameter_names()),
            **settings['method']}
        seeds = list(spec.seeds or range(quick['seeds'] if quick
                                         else proto.seeds))

        for backbone in spec.backbones or [proto.backbone]:
            bb_kwargs = dict(proto.backbone_kwargs)
            if quick:
                bb_kwargs.update(quick.get('backbone_kwargs', {}))
            if spec.pooling:
                bb_kwargs['pooling'] = spec.pooling
            dropped = _drop_unsupported(backbone, bb_kwargs)
            bb_kwargs.update(settings['backbone'])  # checked: all accepted
            if dropped:
                say(f'[{runner}] note: backbone {backbone} takes no '
                    f"{', '.join(dropped)}; the protocol's values are unused")
            folder = out_root / dataset / _backbone_dir(backbone, bb_kwargs)
            bb_label = backbone_label(backbone, bb_kwargs.get('pooling'))
            paper_bb = backbone_label(
                proto.backbone, proto.backbone_kwargs.get('pooling'))
            say(f'[{runner}] {dataset} / {bb_label}: methods '
                f"{', '.join(methods)}; seeds {seeds}; up to {cfg.epochs} "
                f'epochs; device {device}; output {folder}'
                + (f'; {workers} runs at once' if workers > 1 else '')
                + (f'; seed-batched, up to {spec.seed_batch} seeds per model'
                   if spec.seed_batch > 1 else ''))
            cell = Cell(folder=folder, seeds=list(seeds),
                        methods=list(methods), quick=quick)
            for seed in seeds:
                for method in methods:
                    uses_hma = METHODS[method].uses_hma
                    run_id = dict(runner=runner, dataset=dataset,
                                  backbone=backbone, backbone_kwargs=bb_kwargs,
                                  hma=proto.hma if uses_hma else None,
                                  momentum=proto.momentum,
                                  dataset_kwargs=proto.dataset_kwargs,
                                  quick=quick)
                    if spec.ddp:  # other dropout draws: its own too
                        run_id['ddp'] = True
                    else:
                        # The random streams of fit_seeds, every seed's own
                        # (a group of one included): the key's historical
                        # name keeps the committed rows' fingerprints. How
                        # many seeds share a model is not part of a run's
                        # identity: it never changes the result.
                        run_id['seed_batched'] = True
                    ident = fingerprint({
                        'run': run_id, 'method': method, 'seed': seed,
                        'train': train_record(cfg, hyperparameters)})
                    stem = folder / method / f'seed{seed}'
                    if ident in committed:
                        say(f'  {method_label(method)} seed {seed}: '
                            f'committed in {spec.skip_committed}, skipped')
                        continue
                    rec = _kept_run(stem, ident, say) if spec.resume \
                        else None
                    if rec is not None:
                        cell.finished[seed, method] = rec
                        kept.append((stem.with_suffix('.json'), rec))
                        continue
                    cell.jobs.append(Job(
                        runner=runner, dataset=dataset, backbone=backbone,
                        bb_kwargs=bb_kwargs, method=method, seed=seed,
                        cfg=cfg, hyperparameters=hyperparameters,
                        proto=proto, quick=quick, device=device, spec=spec,
                        stem=stem, run_id=run_id, ident=ident,
                        progress=progress and workers <= 1,
                        meta=dict(runner=runner, table=proto.table,
                                  backbone_label=bb_label,
                                  paper_backbone=paper_bb, quick=spec.quick,
                                  versions=versions, commit=commit,
                                  engine=ENGINE_VERSION)))
            if workers > 1:  # the longer runs first, so none starts last
                cell.jobs.sort(key=lambda job: not METHODS[job.method]
                               .uses_hma)
            cells.append(cell)
    _note_uncompared(runner, kept if spec.compare_evals else [], out_root)
    return cells


def _committed_runs(runs_csv: Optional[Path]) -> set:
    r"""The fingerprints of the runs with a row of today's engine version
    in :obj:`runs_csv` (``--skip-committed``; empty without one): rows of
    an older version are not today's runs of them."""
    if runs_csv is None:
        return set()
    return {r['fingerprint'] for r in read_runs(runs_csv)
            if str(r['engine']) == str(ENGINE_VERSION)}


def _kept_run(stem: Path, ident: str, say: Printer) -> Optional[dict]:
    r"""The finished run at :obj:`stem` that ``--resume`` keeps (the same
    fingerprint :obj:`ident`), said with its engine version when that is
    not today's; ``None`` when there is none to keep."""
    rec = read_result(stem.with_suffix('.json'))
    if rec is None or rec.get('run_fingerprint') != ident:
        return None
    engine = rec.get('engine', ENGINE_VERSION)
    say(f"  {method_label(rec['method'])} seed {rec['seed']}: finished "
        f"earlier, kept" + (f" (engine version {engine}; today's is "
                            f"{ENGINE_VERSION})"
                            if engine != ENGINE_VERSION else ''))
    return rec


def _note_uncompared(runner: str, kept: List[Tuple[Path, dict]],
                     out_root: Path):
    r"""Says which of the runs ``--resume`` :obj:`kept` lack the scores
    that ``--compare-evals`` asks for (not a progress line: shown with
    ``--quiet`` too)."""
    uncompared = [path for path, rec in kept if not rec.get('by_eval_mode')]
    if uncompared and distributed.is_main_process():
        print(f'[{runner}] note: --compare-evals does not apply to '
              f'{len(uncompared)} run(s) finished earlier without it, kept '
              f'as they are, without the other eval modes\' scores ('
              f'{_listing(uncompared, out_root)}); to add them, train those '
              f'runs again: without --resume, with --force (which moves '
              f'their results aside)',
              file=sys.stderr, flush=True)


def _listing(paths: List[Path], root: Path, limit: int = 3) -> str:
    names = [str(p.relative_to(root)) if root in p.parents else str(p)
             for p in paths]
    more = f' and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def _quick_part(quick: Optional[Mapping[str, Any]], names) -> Dict[str, Any]:
    r"""The entries of the ``--quick`` settings :obj:`quick` named in
    :obj:`names`."""
    return {k: v for k, v in (quick or {}).items() if k in names}


def _drop_unsupported(backbone: str, kwargs: Dict[str, Any]) -> List[str]:
    # A protocol's backbone arguments may not all apply when --backbone picks
    # another family (e.g. `pooling` for the image MLP).
    spec = BACKBONES[backbone]
    accepted = (set(inspect.signature(spec.cls.__init__).parameters)
                - set(spec.fixed))
    dropped = sorted(k for k in kwargs if k not in accepted)
    for key in dropped:
        del kwargs[key]
    return dropped


def _backbone_dir(backbone: str, kwargs: Mapping[str, Any]) -> str:
    pooling = kwargs.get('pooling')
    return f'{backbone}-{pooling}' if pooling in ('max', 'sum') else backbone
