r"""Hyperparameter sweeps of a benchmark runner, chosen on validation only.

A sweep tries a grid of runner settings on one dataset and one method. Each
*trial* is one point of the grid: the runner trains it on a few *search
seeds* (default 100, 101, 102) and the trial's score is the mean validation
score over them. The test score is never read while choosing. The best trial
is then *confirmed*: the runner trains it again on fresh seeds (default
0..9, disjoint from the search seeds) and reports validation and test.

    python benchmarks/sweep.py --runner ood --dataset NCI1 --method hma
    python benchmarks/sweep.py --runner ood --dataset NCI1 --method erm
    python benchmarks/sweep.py --runner ood --dataset PROTEINS --method hma \
        --param hma.memory_size=1x,2x --param train.lr=1e-3,1e-4 -- --epochs 50

Search spaces (``--space paper``, the default without ``--param``):

* HMA and its ablations, the paper's search: memory size
  M in {1, 2, 3} x the protocol's batch size and slots per class
  k in {8, 16, 32, 64}: 12 trials.
* Every other method (ERM, IRM, ...), the same budget of 12 trials: the
  backbone's dropout in {0.1, 0.3, 0.5} x learning rate in
  {1e-3, 3e-3, 1e-4, 3e-4}.

``--param KEY=V1,V2,..`` gives a space of one's own (repeatable; with
``--space paper`` it adds to or replaces axes of the paper's grid). KEY is
``hma.NAME``, ``backbone.NAME``, ``train.NAME``, ``method.NAME`` (as the
runners' ``--set``) or ``momentum``; short names: ``M`` / ``memory_size``,
``k`` / ``slots_per_class``, ``l`` / ``label_dim``, ``dropout``, ``lr``.
Values are read as JSON (``1e-3``, ``true``, ``null``); ``none`` is
``null``; ``2x`` is 2 x the batch size of the runs (the protocol's, or
``--batch-size`` given to the runner).

Layout of the output folder::

    OUT/study.db                     the Optuna study (SQLite): resumable
    OUT/trials/tNN/DATASET/...       each trial's runs (the runner's layout)
    OUT/best.json                    every trial's mean validation, the best
                                     settings and the command to reproduce
                                     them; the confirmation's scores
    OUT/summary.md                   the printed tables
    OUT/confirm/DATASET/...          the confirmation runs

A sweep stopped at any point continues where it stopped when run again with
the same arguments: finished trials are kept (the study records them), an
interrupted trial is retried and its runs continue with the runner's
``--resume`` (finished seeds are kept, an interrupted run continues from its
checkpoint). Only one sweep may use a folder at a time (a lock file).
``OUT/best.json`` is rewritten after every trial, so it always holds the
trials finished so far.

``--continue-from SUMMARY`` continues a sweep on another machine (or after
its folder was lost) from a summary it wrote (a ``best.json``, e.g. the copy
committed under ``results/paper/sweeps/``): the trials recorded there are
taken as finished, with their scores, and not trained again, and so is the
confirmation when the summary has one. The summary must come from the same
sweep (runner, dataset, method, space, search seeds and runner options).

``--ray [ADDRESS]`` (with ``--ray-cpus-per-run``, ``--ray-gpus-per-run``)
trains the runs of every trial and of the confirmation as tasks on a Ray
cluster (the runners' ``--ray``, docs/scaling.md): trials one after
another, a trial's runs at once. Where the runs train is not part of the
sweep's identity: a sweep started locally continues on Ray and the reverse.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..methods import METHODS
from ..registry import UnknownNameError
from ..runners.cli import build_parser as runner_parser
from ..runners.invocation import run_benchmark
from ..runners.protocols import RUNNERS, runner_module
from ..runners.ray_backend import LOCAL, import_ray
from ..runners.spec import RunSpec, check_names
from ..train.results import mean_std, write_json
from .sweep_store import (check_study_file, complete_trials, folder_lock,
                          import_optuna, requeue_interrupted,
                          storage_errors)
from .sweep_space import (OWN_OPTIONS, RAY_OPTIONS,
                          SEARCH_SEED_START, STUDY_NAME, SUMMARY_IDENTITY,
                          SWEEP_KIND, SweepError, arg_value, choose_best,
                          finite_or_none, fmt_params, fmt_score,
                          format_report, grid, paper_space, parse_param,
                          parse_seed_list, parse_value, point_key,
                          resolve_space, score_runs, seeds_arg,
                          summary_differences, trial_args, trial_ids,
                          trial_settings)

# --------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------

def load_runner(name: str):
    r"""The runner module :obj:`name` of the package (it holds the
    datasets' protocols, ``PROTOCOLS``, see
    :mod:`pyg_hma.runners.protocols`); :class:`SweepError` when there is
    none."""
    try:
        return runner_module(name)
    except UnknownNameError as e:
        raise SweepError(str(e)) from None


def parse_runner_args(runner: str, protocols, argv: Sequence[str]
                      ) -> RunSpec:
    r"""The runner options given to the sweep (after ``--``), parsed once
    into a run specification and checked as the runner's ``main`` does
    (its values and names; not its folders); a :class:`SweepError` names
    the first problem."""
    parser = runner_parser(runner, protocols)

    def error(message):
        raise SweepError(f'{runner}.py {shlex.join(argv)}: {message}')
    # argparse reports a problem by calling these; make them raise.
    parser.error = error
    parser.exit = lambda status=0, message=None: error(
        (message or '').strip() or 'exited')
    args = parser.parse_args(list(argv))
    try:
        spec = RunSpec.from_args(args)
        check_names(spec, protocols)
    except ValueError as e:  # ArgumentError, UnknownNameError too
        error(str(e))
    return spec


def with_settings(spec: RunSpec, params: Mapping[str, Any]) -> RunSpec:
    r""":obj:`spec` with a trial's :obj:`params` applied as the runners'
    ``--set SECTION.NAME=VALUE`` applies them (a later setting replaces an
    earlier one of the same name), and ``momentum`` as ``--momentum``."""
    triples, other = trial_settings(params)
    settings = {section: dict(values)
                for section, values in spec.settings.items()}
    for section, name, value in triples:
        settings.setdefault(section, {})[name] = value
    changes: Dict[str, Any] = {}
    if 'momentum' in other:
        changes.update(momentum=other['momentum'], momentum_given=True)
    return dataclasses.replace(spec, settings=settings, **changes)


def run_runner(runner: str, protocols, spec: RunSpec,
               stdout=None) -> List[dict]:
    r"""Runs the runner in this process on :obj:`spec`; returns the result
    records of its runs (those it trained and, with ``resume``, those it
    kept). The runner's summary goes to :obj:`stdout` (``None``: this
    process's stdout)."""
    check_names(spec, protocols)
    with contextlib.redirect_stdout(stdout or sys.stdout):
        return run_benchmark(spec, runner, protocols)


# --------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------

@dataclass
class Sweep:
    r"""One sweep: what to tune, where, and on which seeds.

    Args:
        runner: ``'ood'``, ``'ogb_mol'`` or ``'tu_id'``.
        dataset, method: one of the runner's datasets, one method.
        space: key -> values (values may be ``'Nx'``, N x the batch size).
        search_seeds: the seeds that score a trial.
        confirm_seeds: the seeds of the confirmation (none: no confirmation).
        out: the output folder.
        runner_args: further runner options for every run (``--epochs 50``).
        quick: the runner's ``--quick``.
        n_trials: run at most this many trials now (``None``: all left).
        quiet: no progress lines.
        space_name: ``'paper'`` or ``'custom'`` (for the record).
        ray_args: the runner's Ray options for every run (``['--ray',
            'HOST:PORT']``): each trial's runs train as tasks on that
            cluster; not part of the sweep's identity.
        continue_from: a summary (``best.json``) an earlier run of the same
            sweep wrote: its finished trials and its confirmation are taken
            as they are instead of trained again.
    """
    runner: str
    dataset: str
    method: str
    space: Dict[str, list]
    search_seeds: List[int]
    confirm_seeds: List[int]
    out: Path
    runner_args: List[str] = field(default_factory=list)
    quick: bool = False
    n_trials: Optional[int] = None
    quiet: bool = False
    space_name: str = 'custom'
    ray_args: List[str] = field(default_factory=list)
    continue_from: Optional[Path] = None
    # Filled by check():
    batch_size: int = 0
    points: List[Dict[str, Any]] = field(default_factory=list)
    ids: List[str] = field(default_factory=list)
    protocols: Any = None
    carried: Dict[str, dict] = field(default_factory=dict)
    carried_confirm: Optional[dict] = None
    base: Optional[RunSpec] = None  # the runner options, parsed once

    # ---- checks, before any training ------------------------------------
    def check(self) -> 'Sweep':
        r"""Checks everything that can be checked without training: the
        runner, dataset, method, runner options, every trial's settings, the
        seeds. Raises :class:`SweepError`."""
        if self.method not in METHODS:  # needs no runner file
            raise SweepError(f"unknown method '{self.method}'; choose from "
                             f"{', '.join(METHODS)}")
        self.protocols = load_runner(self.runner).PROTOCOLS
        if self.dataset not in self.protocols:
            raise SweepError(f"runner {self.runner} has no dataset "
                             f"'{self.dataset}'; choose from "
                             f"{', '.join(self.protocols)}")
        if not self.search_seeds:
            raise SweepError('--search-seeds: at least one seed is needed')
        both = sorted(set(self.search_seeds) & set(self.confirm_seeds))
        if both:
            raise SweepError(f'search and confirmation seeds overlap ({both}):'
                             f' a confirmation needs fresh seeds')
        if self.n_trials is not None and self.n_trials < 1:
            raise SweepError('--n-trials must be positive')
        for token in self.runner_args:
            if token.split('=')[0] in OWN_OPTIONS:
                raise SweepError(f'runner option {token} is set by the sweep '
                                 f'itself; leave it out')
            if token.split('=')[0] in RAY_OPTIONS:
                raise SweepError(f'give {token} to the sweep (before --), '
                                 f'not to the runner')
        if self.ray_args:
            try:
                import_ray()
            except ImportError as e:
                raise SweepError(str(e)) from None
        # The runner options, parsed once; every run's specification is
        # this one with the trial's settings, seeds and folder.
        base = parse_runner_args(self.runner, self.protocols,
                                 self._base_argv() + self.ray_args)
        if base.datasets != (self.dataset, ) or base.methods or base.seeds \
                or base.out or base.resume:
            raise SweepError('the runner options after -- may not set '
                             '--dataset, --method, --seeds, --out or --resume '
                             '(the sweep sets them)')
        if base.backbones and len(base.backbones) > 1:
            raise SweepError('a sweep tunes one backbone; give one --backbone')
        given = base.settings  # --set and the options that set one (--lr)
        for key in self.space:
            section, _, name = key.partition('.')
            if (name in given.get(section, {})
                    or (key == 'backbone.pooling' and base.pooling)
                    or (key == 'momentum' and base.momentum_given)):
                raise SweepError(f'{key} is swept; do not also set it in the '
                                 f'runner options')
        proto = self.protocols[self.dataset]
        quick = proto.quick_settings() if self.quick else {}
        self.batch_size = (given['train'].get('batch_size')
                           or quick.get('batch_size')
                           or proto.train.batch_size)
        resolved = resolve_space(self.space, self.batch_size)
        self.points = grid(resolved)
        self.ids = trial_ids(self.points)
        self.base = base
        for tid, params in zip(self.ids, self.points):  # all valid
            try:
                check_names(self.run_spec(params, self.search_seeds,
                                          self.out / 'trials' / tid),
                            self.protocols)
            except ValueError as e:  # UnknownNameError too
                raise SweepError(f'trial {tid} ({fmt_params(params)}): '
                                 f'{e}') from None
        self.space = resolved
        check_study_file(self.out / 'study.db')  # before anything is written
        if self.continue_from is not None:
            self._read_carried()
        return self

    def _read_carried(self):
        r"""Reads :obj:`continue_from`: its finished trials, by grid point,
        and its confirmation; refuses a summary of another sweep."""
        path = Path(self.continue_from)
        try:
            prior = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:
            raise SweepError(f"--continue-from {path}: not a readable sweep "
                             f"summary ({e}); give a best.json a sweep "
                             f"wrote") from None
        if not isinstance(prior, dict) or prior.get('kind') != SWEEP_KIND:
            raise SweepError(f'--continue-from {path}: not a sweep summary; '
                             f'give a best.json a sweep wrote')
        mine = json.loads(json.dumps(self.report([], None, False)))
        diff = summary_differences(mine, prior)
        if diff:
            raise SweepError(f"--continue-from {path} is another sweep's "
                             f"summary (its {', '.join(diff)} differ); give "
                             f"this sweep's")
        keys = {point_key(p) for p in self.points}
        self.carried = {point_key(t['params']): t
                        for t in prior.get('trials', ())
                        if point_key(t['params']) in keys}
        conf = prior.get('confirm')
        if conf and conf.get('seeds') == list(self.confirm_seeds):
            self.carried_confirm = conf

    def _base_argv(self) -> List[str]:
        return (['--dataset', self.dataset] + (['--quick'] if self.quick
                                               else [])
                + list(self.runner_args))

    def run_spec(self, params: Mapping[str, Any], seeds: Sequence[int],
                 out: Path) -> RunSpec:
        r"""The run specification of :obj:`params` on :obj:`seeds` into
        :obj:`out`: the runner options (parsed once, by :meth:`check`) with
        the trial's settings applied as ``--set`` applies them
        (:func:`with_settings`), the method, the seeds, the folder and
        ``resume`` (an interrupted trial continues its runs)."""
        spec = with_settings(self.base, params)
        return dataclasses.replace(
            spec, methods=(self.method, ), seeds=tuple(seeds),
            out=Path(out), resume=True, quiet=spec.quiet or self.quiet)

    def reproduce_command(self, params: Mapping[str, Any],
                          seeds: Sequence[int]) -> str:
        argv = (['python', f'benchmarks/{self.runner}.py']
                + self._base_argv() + ['--method', self.method]
                + trial_args(params) + ['--seeds', seeds_arg(seeds)])
        return shlex.join(argv)

    def say(self, *lines):
        if not self.quiet:
            for line in lines:
                print(line, file=sys.stderr, flush=True)

    def identity(self) -> Dict[str, Any]:
        r"""What a stored study must match to be continued."""
        return dict(kind=SWEEP_KIND, runner=self.runner, dataset=self.dataset,
                    method=self.method, space=self.space,
                    search_seeds=self.search_seeds, quick=self.quick,
                    runner_args=self.runner_args)

    # ---- the study -------------------------------------------------------
    def open_study(self):
        r"""The Optuna study in ``OUT/study.db`` (created, or loaded when it
        exists and belongs to this sweep), with interrupted trials queued
        again."""
        optuna = import_optuna()
        path = self.out / 'study.db'
        check_study_file(path)
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            storage = optuna.storages.RDBStorage(
                f"sqlite:///{path.resolve()}")
            study = optuna.create_study(
                study_name=STUDY_NAME, storage=storage, direction='maximize',
                sampler=optuna.samplers.GridSampler(self.space, seed=0),
                load_if_exists=True)
        except storage_errors() as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else \
                type(e).__name__
            raise SweepError(f'{path} cannot be opened as a sweep study '
                             f'({first}); move it aside or use another '
                             f'--out') from None
        stored = study.user_attrs.get('sweep')
        mine = json.loads(json.dumps(self.identity()))
        if stored is None:
            study.set_user_attr('sweep', mine)
        elif stored != mine:
            diff = [k for k in mine if stored.get(k) != mine[k]]
            raise SweepError(
                f"{self.out} holds another sweep (its {', '.join(diff)} "
                f"differ); use another --out")
        requeue_interrupted(study)
        return study

    def left(self, study) -> List[int]:
        r"""Indices of the grid points without a finished trial."""
        done = {point_key(t.params) for t in complete_trials(study)}
        return [i for i, p in enumerate(self.points)
                if point_key(p) not in done]

    def objective(self, trial) -> float:
        params = {key: trial.suggest_categorical(key, values)
                  for key, values in self.space.items()}
        index = [point_key(p) for p in self.points].index(
            point_key(params))
        params = self.points[index]  # in the space's key order
        tid = self.ids[index]
        trial.set_user_attr('trial_id', tid)
        carried = self.carried.get(point_key(params))
        if carried is not None:
            for key in ('val_mean', 'val_std', 'n', 'val', 'metric'):
                trial.set_user_attr(key, carried[key])
            val = fmt_score(carried['val_mean'], carried['val_std'],
                             carried['metric'])
            self.say(f'[sweep] trial {tid}: mean val {val} over '
                     f"{carried['n']} seed(s), carried over from "
                     f'{self.continue_from}')
            return (float('nan') if carried['val_mean'] is None
                    else carried['val_mean'])
        self.say(f'[sweep] trial {tid}: {fmt_params(params)}; seeds '
                 f'{self.search_seeds}')
        start = time.perf_counter()
        records = run_runner(
            self.runner, self.protocols,
            self.run_spec(params, self.search_seeds,
                          self.out / 'trials' / tid),
            stdout=io.StringIO() if self.quiet else sys.stderr)
        score = score_runs(records)
        for key in ('val_mean', 'val_std', 'n', 'val', 'metric'):
            trial.set_user_attr(key, score[key])
        val = fmt_score(score['val_mean'], score['val_std'], score['metric'])
        self.say(f"[sweep] trial {tid}: mean val {val} over "
                 f"{score['n']} seed(s), {time.perf_counter() - start:.0f} s")
        # No score (NaN): Optuna records the trial as failed.
        return (float('nan') if score['val_mean'] is None
                else score['val_mean'])

    def trials(self, study) -> List[dict]:
        r"""The finished trials in grid order: id, params and score."""
        by_point = {point_key(t.params): t for t in complete_trials(study)}
        out = []
        for tid, params in zip(self.ids, self.points):
            t = by_point.get(point_key(params))
            if t is not None:
                attrs = t.user_attrs
                out.append(dict(trial=tid, params=params,
                                val_mean=attrs['val_mean'],
                                val_std=attrs['val_std'], n=attrs['n'],
                                val=attrs['val'], metric=attrs['metric'],
                                optuna_number=t.number))
        return out

    def confirm(self, best: Mapping[str, Any]) -> Dict[str, Any]:
        r"""Trains the best trial on the confirmation seeds; its scores."""
        carried = self.carried_confirm
        if carried is not None and carried['trial'] == best['trial'] \
                and carried['params'] == best['params']:
            self.say(f"[sweep] confirmation of {best['trial']}: carried over "
                     f'from {self.continue_from}')
            return carried
        out = self.out / 'confirm'
        self.say(f"[sweep] confirming {best['trial']} "
                 f"({fmt_params(best['params'])}) on seeds "
                 f"{self.confirm_seeds}")
        records = run_runner(self.runner, self.protocols,
                             self.run_spec(best['params'], self.confirm_seeds,
                                           out))
        primary = records[0]['primary_test']
        val = finite_or_none(mean_std([r['val'] for r in records]))
        test = finite_or_none(mean_std([r['test'][primary] for r in records]))
        return dict(trial=best['trial'], params=best['params'],
                    seeds=[r['seed'] for r in records], out=str(out),
                    n=len(records), metric=records[0]['metric'],
                    val_mean=val[0], val_std=val[1], test_name=primary,
                    test_mean=test[0], test_std=test[1],
                    val=[r['val'] for r in records],
                    test=[r['test'][primary] for r in records])

    def run(self) -> Dict[str, Any]:
        r"""Runs (or continues) the sweep and the confirmation; writes
        ``best.json`` and ``summary.md``; returns ``best.json``'s content."""
        if not self.points:
            self.check()
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.out.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.out / '.sweep.lock'):
            study = self.open_study()
            left = self.left(study)
            todo = len(left) if self.n_trials is None else min(
                self.n_trials, len(left))
            finished = len(self.points) - len(left)
            carried = sum(point_key(self.points[i]) in self.carried
                          for i in left)
            self.say(f'[sweep] {self.runner} / {self.dataset} / {self.method}:'
                     f' {len(self.points)} trials ({finished} finished '
                     f'earlier, '
                     + (f'{carried} carried over from {self.continue_from}, '
                        if self.continue_from else '')
                     + f'{max(0, todo - carried)} to train now) x '
                     f'{len(self.search_seeds)} search seed(s); output '
                     f'{self.out}')
            if todo:  # the summary after every trial: never lost
                study.optimize(self.objective, n_trials=todo, callbacks=[
                    lambda study, _: self._write(self.summary(study))])
            report = self.summary(study)
            complete, best = report['complete'], report['best']
            if best is not None and complete and self.confirm_seeds:
                self._write(report)
                report['confirm'] = self.confirm(best)
            self._write(report)
        print(format_report(report), flush=True)
        return report

    def summary(self, study) -> Dict[str, Any]:
        r"""``best.json``'s content for the trials finished in
        :obj:`study` (without a confirmation)."""
        trials = self.trials(study)
        return self.report(trials, choose_best(trials),
                           len(trials) == len(self.points))

    def report(self, trials, best, complete) -> Dict[str, Any]:
        best_out = None
        if best is not None:
            best_out = dict(
                trial=best['trial'], params=best['params'],
                val_mean=best['val_mean'], val_std=best['val_std'],
                n=best['n'],
                runner_args=(['--method', self.method]
                             + trial_args(best['params'])),
                command=self.reproduce_command(
                    best['params'], self.confirm_seeds or range(10)))
        return dict(kind=SWEEP_KIND, runner=self.runner, dataset=self.dataset,
                    method=self.method, space_name=self.space_name,
                    space=self.space, batch_size=self.batch_size,
                    quick=self.quick, runner_options=self.runner_args,
                    search_seeds=self.search_seeds,
                    confirm_seeds=self.confirm_seeds,
                    selection='highest mean validation score over the search '
                              'seeds (test scores are not read)',
                    complete=complete, num_trials=len(self.points),
                    trials=trials, best=best_out, confirm=None)

    def _write(self, report):
        write_json(self.out / 'best.json', report)
        (self.out / 'summary.md').write_text(format_report(report))


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise SweepError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog='sweep.py', description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                usage='%(prog)s --runner R --dataset D --method M [options] '
                      '[-- RUNNER OPTIONS]')
    p.add_argument('--runner', required=True, choices=RUNNERS)
    p.add_argument('--dataset', required=True, help="one of the runner's")
    p.add_argument('--method', required=True,
                   help='one method (erm, hma, ...)')
    p.add_argument('--space', choices=('paper', ), help="the built-in space "
                   "(default when no --param is given): HMA M x k, others "
                   "dropout x lr, 12 trials each")
    p.add_argument('--param', action='append', default=[],
                   metavar='KEY=V1,V2,..', help='a swept setting and its '
                   'values (repeatable), e.g. hma.memory_size=1x,2x or '
                   'train.lr=1e-3,1e-4')
    p.add_argument('--search-seeds', default='3', metavar='N|A-B|A,B',
                   help=f'seeds that score a trial (default 3: '
                   f'{SEARCH_SEED_START}-{SEARCH_SEED_START + 2})')
    p.add_argument('--confirm-seeds', default='10', metavar='N|A-B|A,B',
                   help='fresh seeds for the best trial (default 10: 0-9; '
                   '0: no confirmation)')
    p.add_argument('--n-trials', type=int, metavar='N',
                   help='run at most N more trials now, then stop (run '
                   'again to continue)')
    p.add_argument('--continue-from', type=Path, metavar='SUMMARY',
                   help="a best.json an earlier run of this sweep wrote (e.g. "
                   "the copy under results/paper/sweeps/): its finished "
                   "trials and confirmation are kept, not trained again")
    p.add_argument('--out', type=Path, help='output folder (default '
                   'results/sweeps/DATASET-METHOD, results/quick/sweeps/... '
                   'with --quick)')
    p.add_argument('--quick', action='store_true',
                   help="the runner's --quick (tiny smoke runs)")
    p.add_argument('--quiet', action='store_true',
                   help='no progress output (the tables are still printed)')
    p.add_argument('--ray', nargs='?', const=LOCAL, metavar='ADDRESS',
                   help="train each trial's runs as tasks on a Ray cluster "
                   "(the runner's --ray: alone a local cluster, or the one "
                   "at ADDRESS); trials run one after another, a trial's "
                   "runs at once (docs/scaling.md; needs pyg_hma[ray])")
    p.add_argument('--ray-cpus-per-run', metavar='C',
                   help="CPUs each run's task asks for (default 1)")
    p.add_argument('--ray-gpus-per-run', metavar='G',
                   help="GPUs each run's task asks for (default 0; 0.25: "
                   "four runs per card)")
    return p


def _ray_args(args: argparse.Namespace) -> List[str]:
    r"""The runner options for the sweep's Ray options."""
    if args.ray is None:
        given = [o for o in ('ray_cpus_per_run', 'ray_gpus_per_run')
                 if getattr(args, o) is not None]
        if given:
            raise SweepError(f"--{given[0].replace('_', '-')} needs --ray")
        return []
    out = ['--ray'] + ([] if args.ray == LOCAL else [args.ray])
    for option in ('ray_cpus_per_run', 'ray_gpus_per_run'):
        if getattr(args, option) is not None:
            out += [f"--{option.replace('_', '-')}", getattr(args, option)]
    return out


def sweep_from_args(argv: Sequence[str]) -> Sweep:
    r"""A checked :class:`Sweep` from a command line (``--`` separates the
    runner's options). Raises :class:`SweepError`."""
    argv = list(argv)
    runner_args: List[str] = []
    if '--' in argv:
        cut = argv.index('--')
        argv, runner_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    space: Dict[str, list] = {}
    if args.space == 'paper' or not args.param:
        space = paper_space(args.method)
    for text in args.param:
        key, values = parse_param(text)
        space[key] = values
    out = args.out or Path('results') / ('quick/sweeps' if args.quick
                                         else 'sweeps') / \
        f'{args.dataset}-{args.method}'
    return Sweep(
        runner=args.runner, dataset=args.dataset, method=args.method,
        space=space, space_name=('custom' if not args.space and args.param
                                 else 'paper' if not args.param
                                 else 'paper+param'),
        search_seeds=parse_seed_list(args.search_seeds, SEARCH_SEED_START,
                                     '--search-seeds'),
        confirm_seeds=parse_seed_list(args.confirm_seeds, 0,
                                      '--confirm-seeds'),
        out=out, runner_args=runner_args, quick=args.quick,
        n_trials=args.n_trials, quiet=args.quiet,
        ray_args=_ray_args(args), continue_from=args.continue_from).check()


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""``benchmarks/sweep.py``: returns the exit status (2: bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        import_optuna()
        sweep = sweep_from_args(argv)
        sweep.run()
    except SweepError as e:
        print(f'sweep.py: error: {e}', file=sys.stderr)
        return 2
    return 0


__all__ = [
    'Sweep', 'SweepError', 'main', 'sweep_from_args', 'build_parser',
    'run_runner', 'parse_runner_args', 'with_settings', 'load_runner',
    'import_optuna', 'format_report',
    # the space and the scores (:mod:`.sweep_space`), here for callers of
    # this module
    'SEARCH_SEED_START', 'STUDY_NAME', 'SWEEP_KIND', 'SUMMARY_IDENTITY',
    'paper_space', 'parse_param', 'parse_value', 'resolve_space', 'grid',
    'trial_ids', 'trial_args', 'trial_settings', 'seeds_arg',
    'parse_seed_list', 'score_runs', 'choose_best', 'summary_differences',
    'arg_value',
]
