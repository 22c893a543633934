r"""Runs of a benchmark invocation as tasks on a Ray cluster (``--ray``).

Every training unit of the runner (one run, or a group of seeds trained as
one seed-batched model with ``--seed-batch``) becomes one Ray task that asks
for ``--ray-cpus-per-run`` CPUs and ``--ray-gpus-per-run`` GPUs (``0.25``:
four runs share a card). All units of the invocation are submitted at once,
so the cluster runs as many as its resources allow, whatever dataset or
backbone they belong to.

* Without an address, :func:`ray.init` starts a local cluster on this
  machine (or joins the one named by ``$RAY_ADDRESS``); with one
  (``HOST:PORT``, ``auto``, ``ray://HOST:10001``) it joins that cluster. A
  process in which Ray is already initialised (a sweep's later trials, a
  test, a notebook) keeps its cluster.
* Results: the worker trains the unit exactly as a local run does (its
  JSON, log and checkpoint in the output folder as it sees it) and returns
  the records; the driver writes each returned record as the run's JSON in
  *its* output folder (atomically) and builds the summaries. On a shared
  file system both are the same file (the same bytes); without one, the
  driver still ends with every JSON and summary, while logs, checkpoints and
  ``--save-model`` files stay on the node that trained the run.
* Failures: a task whose worker dies (killed, out of memory, a lost node)
  or that raises is retried once (``max_retries=1``,
  ``retry_exceptions=True``); one that fails again is reported by name
  after every other task has finished (:class:`RunsFailedError`), and the
  finished runs are all written, so that ``--resume`` continues with the
  failed ones only.
* Progress: one bar on the driver over all runs of the invocation, with
  the finished, running and failed counts.

Ray is an optional dependency: ``pip install 'pyg_hma[ray]'``.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import (Any, Callable, Dict, Iterator, Mapping, Optional,
                    Sequence, Tuple)

import torch

RAY_MISSING = ("--ray needs Ray, an optional dependency: pip install "
               "'pyg_hma[ray]'")
#: ``--ray`` without an address: start a local cluster on this machine.
LOCAL = 'local'
#: Seconds between two refreshes of the progress bar while tasks run.
REFRESH_S = 1.0
#: Seconds to wait for a ``--ray ADDRESS`` to answer before giving up (Ray
#: itself retries for minutes); ``--ray-timeout`` changes it.
CONNECT_TIMEOUT_S = 20.0


class RunsFailedError(RuntimeError):
    r"""Runs that failed on Ray twice (the first try and one retry)."""


class RayUnreachableError(RuntimeError):
    r"""No Ray cluster answers at the ``--ray`` address."""


def ray_endpoint(address: str) -> Optional[Tuple[str, int]]:
    r"""``(host, port)`` of a ``--ray`` address (``HOST:PORT`` or
    ``ray://HOST:PORT``); ``None`` for :data:`LOCAL` and ``auto``, which Ray
    resolves itself. Raises :class:`ValueError` for anything else."""
    if address in (LOCAL, 'auto'):
        return None
    rest = address.split('://', 1)[1] if '://' in address else address
    host, sep, port = rest.rpartition(':')
    if not sep or not host or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise ValueError(f"--ray {address}: expects HOST:PORT (e.g. "
                         f"10.0.0.5:6379), ray://HOST:PORT, auto, or no "
                         f"address for a local cluster")
    return host.strip('[]'), int(port)


def check_reachable(address: str,
                    timeout: Optional[float] = None) -> None:
    r"""Raises :class:`RayUnreachableError` (one line) when nothing
    accepts a connection at the ``--ray`` :obj:`address` within
    :obj:`timeout` seconds (default :data:`CONNECT_TIMEOUT_S`), retrying
    meanwhile (a head node may be starting). Local clusters and ``auto``
    are left to Ray."""
    endpoint = ray_endpoint(address)
    if endpoint is None:
        return
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            socket.create_connection(
                endpoint, timeout=max(0.1, min(2.0, left))).close()
            return
        except OSError as e:
            reason = e.strerror or type(e).__name__
        if time.monotonic() + 0.5 >= deadline:
            break
        time.sleep(0.5)
    raise RayUnreachableError(
        f'--ray {address}: no Ray cluster answered there within '
        f'{timeout:g} s ({reason}); start one with `ray start --head` on '
        f'that machine and give its address, --ray alone for a local '
        f'cluster, or --ray-timeout to wait longer')


def import_ray():
    r"""The :mod:`ray` module; :class:`ImportError` with the extra to
    install when it is missing."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def ray_problem(options: Mapping[str, Any]) -> Optional[str]:
    r"""The first problem with the Ray options of a runner's parsed command
    line :obj:`options` (``--ray``, ``--ray-cpus-per-run``,
    ``--ray-gpus-per-run`` and what they combine with) as one line naming
    the remedy; ``None`` when there is none."""
    cpus = options.get('ray_cpus_per_run')
    gpus = options.get('ray_gpus_per_run')
    wait = options.get('ray_timeout')
    if options.get('ray') is None:
        given = [o for o, v in (('--ray-cpus-per-run', cpus),
                                ('--ray-gpus-per-run', gpus),
                                ('--ray-timeout', wait)) if v is not None]
        return f'{given[0]} needs --ray' if given else None
    try:
        ray_endpoint(options['ray'])
    except ValueError as e:
        return str(e)
    if wait is not None and not (wait > 0 and wait < float('inf')):
        return (f'--ray-timeout must be a positive number of seconds, got '
                f'{wait}')
    if cpus is not None and not cpus > 0:
        return f'--ray-cpus-per-run must be positive, got {cpus}'
    if gpus is not None and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
        return (f'--ray-gpus-per-run must be a fraction of one GPU (0.25: '
                f'four runs per card) or a whole number, got {gpus}')
    if options.get('jobs', 1) > 1:
        return ('--jobs does not combine with --ray: every run is a Ray task '
                '(size them with --ray-cpus-per-run)')
    if options.get('ddp'):
        return ('--ddp does not combine with --ray: a run on several GPUs '
                'starts with torchrun (docs/scaling.md)')
    given = options.get('device', 'auto')
    try:
        device = torch.device('cpu' if given == 'auto' else given)
    except RuntimeError as e:
        return f'--device {given}: {e}'
    if device.type == 'cuda' and not gpus:
        return (f'--device {given} with --ray needs --ray-gpus-per-run: Ray '
                f'gives a task a GPU only when it asks for one')
    if device.type == 'cuda' and device.index not in (None, 0):
        return (f'--device {given}: on Ray a run uses the GPU Ray gives it; '
                f'use --device cuda')
    if device.type == 'cpu' and given != 'auto' and gpus:
        return ('--device cpu does not combine with --ray-gpus-per-run; '
                'drop one of them')
    try:
        import_ray()
    except ImportError as e:
        return str(e)
    return None


def run_device(device: str, gpus_per_run: Optional[float]) -> torch.device:
    r"""The device of a run on Ray: the GPU Ray gives the task (it sees it
    as ``cuda``) when runs ask for GPUs, else the CPU (``--device auto``
    means the worker's hardware, not the driver's)."""
    return torch.device('cuda' if gpus_per_run else 'cpu')


def _connect(address: str, verbose: bool, timeout: Optional[float] = None):
    ray = import_ray()
    if not ray.is_initialized():
        check_reachable(address, timeout)
        try:
            ray.init(address=None if address == LOCAL else address,
                     logging_level=logging.WARNING, log_to_driver=verbose)
        except ConnectionError as e:
            raise RayUnreachableError(
                f'--ray {address}: {str(e).splitlines()[0]}') from None
    return ray


def _run_unit_task(run_unit: Callable, unit, key: str, cwd: str,
                   threads: int, board):
    r"""The body of one task: marks the unit started, then runs it where
    the driver runs (its working directory, when this node has it, so that
    relative output and data paths mean the same) with the runner's
    threads."""
    if board is not None:
        board.start.remote(key)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    if threads and threads > 0:
        torch.set_num_threads(threads)
    return run_unit(unit)


def _board(ray):
    r"""A Ray actor holding the names of the units whose task has started
    (the bar's running count). Its class is defined here, so that Ray ships
    it by value: the actor's process imports neither torch nor pyg_hma."""
    class RunBoard:
        def __init__(self):
            self.started = set()

        def start(self, name: str):
            self.started.add(name)

        def names(self) -> set:
            return set(self.started)
    return ray.remote(num_cpus=0)(RunBoard).remote()


class RayRuns:
    r"""The units of one invocation, submitted to Ray at once and collected
    as they finish.

    Args:
        units: the training units (lists of runs).
        run_unit: a picklable function (a module-level one) that runs one
            unit in a worker and returns its result (the runner: its
            ``(job, record)`` pairs).
        name_of: a unit's unique name (``DATASET/BACKBONE/METHOD/seedS``),
            for the bar and the failure report.
        size_of: the number of runs of a unit (default :obj:`len`).
        on_result: called on the driver with each result as soon as it
            arrives (the runner writes the records there).
        address: the ``--ray`` address (:obj:`LOCAL`: a local cluster).
        cpus_per_run, gpus_per_run: what each task asks Ray for.
        threads: torch threads of a run (the runner's ``--threads``).
        quiet: no progress.
        verbose: forward the workers' output to the driver.
        connect_timeout: seconds to wait for a cluster at :obj:`address`
            (default :data:`CONNECT_TIMEOUT_S`; see :func:`check_reachable`).
    """
    def __init__(self, units: Sequence[Any], run_unit: Callable, *,
                 name_of: Callable[[Any], str],
                 size_of: Callable[[Any], int] = len,
                 on_result: Optional[Callable[[Any], None]] = None,
                 address: str = LOCAL, cpus_per_run: float = 1,
                 gpus_per_run: float = 0, threads: int = 1,
                 quiet: bool = False, verbose: bool = False,
                 connect_timeout: Optional[float] = None):
        ray = _connect(address, verbose, connect_timeout)
        self.ray, self.name_of, self.on_result = ray, name_of, on_result
        self.sizes = {name_of(u): size_of(u) for u in units}
        if len(self.sizes) != len(units):
            raise ValueError('every unit needs its own name')
        self.board = _board(ray)
        task = ray.remote(max_retries=1, retry_exceptions=True)(
            _run_unit_task)
        cwd = os.getcwd()
        self.pending: Dict[Any, str] = {}  # object ref -> unit name
        for unit in units:
            name = name_of(unit)
            ref = task.options(
                name=name, num_cpus=cpus_per_run, num_gpus=gpus_per_run
            ).remote(run_unit, unit, name, cwd, threads, self.board)
            self.pending[ref] = name
        self.done: Dict[str, Any] = {}  # unit name -> result, not yet taken
        self.failed: Dict[str, str] = {}  # unit name -> the error's line
        self.progress = None if quiet or not self.sizes else _Progress(
            sum(self.sizes.values()))
        self.started: set = set()  # as the board last told
        self.asked = self.board.names.remote()
        self._show()

    # ---- collecting -------------------------------------------------------
    def results(self, units: Sequence[Any]) -> Iterator[Any]:
        r"""Yields the results of :obj:`units` (submitted earlier) in the
        order they finish; results of other units that arrive meanwhile are
        kept for their turn. Raises :class:`RunsFailedError` once every
        task of the invocation has ended when one of :obj:`units` failed."""
        wanted = [self.name_of(u) for u in units]
        for name in wanted:
            if name not in self.sizes:
                raise KeyError(f'unit {name} was not submitted')
        left = set(wanted)
        while left:
            ready = [n for n in left if n in self.done or n in self.failed]
            if not ready:
                self._wait()
                continue
            for name in ready:
                left.discard(name)
                if name in self.done:
                    result = self.done.pop(name)
                    self._hide()
                    yield result  # the runner prints its line
                    self._show()
        if any(name in self.failed for name in wanted):
            while self.pending:  # nothing finished is lost
                self._wait()
            raise RunsFailedError(self._failure_line())
        self._hide()  # the runner prints its summary

    def _wait(self):
        ray = self.ray
        ready, _ = ray.wait(list(self.pending), num_returns=1,
                            timeout=REFRESH_S)
        for ref in ready:
            name = self.pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                self.failed[name] = _error_line(e)
                self._hide()
                print(f'[ray] {name} failed after a retry: '
                      f'{self.failed[name]}', file=sys.stderr, flush=True)
            else:
                self.done[name] = result
                if self.on_result is not None:
                    self.on_result(result)
        self._show()

    def _failure_line(self) -> str:
        names = sorted(self.failed)
        runs = sum(self.sizes[n] for n in names)
        listing = '; '.join(f'{n} ({self.failed[n]})' for n in names)
        return (f'{runs} of {sum(self.sizes.values())} runs failed on Ray '
                f'after a retry: {listing}. The finished runs are kept: fix '
                f'the cause and run again with --resume')

    # ---- progress --------------------------------------------------------
    def _counts(self) -> Tuple[int, int, int]:
        r"""``(finished, running, failed)`` runs; the running count as the
        board last answered (never waited for)."""
        ready, _ = self.ray.wait([self.asked], timeout=0)
        if ready:
            try:
                self.started = self.ray.get(self.asked)
            except self.ray.exceptions.RayError:  # the count only
                pass
            self.asked = self.board.names.remote()
        pending = set(self.pending.values())
        failed = sum(self.sizes[n] for n in self.failed)
        finished = (sum(self.sizes.values()) - failed
                    - sum(self.sizes[n] for n in pending))
        running = sum(self.sizes[n] for n in pending & self.started)
        return finished, running, failed

    def _show(self):
        if self.progress is not None:
            self.progress.show(*self._counts())

    def _hide(self):
        if self.progress is not None:
            self.progress.hide()

    def close(self):
        r"""Cancels the tasks still pending (the driver stops: Ctrl-C, an
        error), ends the board and closes the bar."""
        for ref in list(self.pending):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        self.pending.clear()
        try:
            self.ray.kill(self.board)
        except Exception:  # gone with the cluster
            pass
        if self.progress is not None:
            self.progress.close()
            self.progress = None


class _Progress:
    r"""The driver's progress over all runs: a tqdm bar on a terminal, a
    line per change of the counts in a log file."""
    def __init__(self, total: int):
        self.total, self.shown, self.bar = total, None, None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, unit='run', desc='[ray] runs',
                            file=sys.stderr, dynamic_ncols=True)

    def show(self, finished: int, running: int, failed: int):
        counts = f'finished {finished}, running {running}, failed {failed}'
        if self.bar is not None:
            self.bar.n = finished + failed
            self.bar.set_postfix_str(counts, refresh=False)
            self.bar.refresh()
        elif counts != self.shown:
            print(f'[ray] runs: {finished + failed}/{self.total}: {counts}',
                  file=sys.stderr, flush=True)
        self.shown = counts

    def hide(self):
        if self.bar is not None:
            self.bar.clear()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _error_line(error: BaseException) -> str:
    r"""The last line of a Ray error (the exception that ended the task)."""
    cause = getattr(error, 'cause', None)
    if isinstance(cause, BaseException):
        return f'{type(cause).__name__}: {cause}'.splitlines()[0]
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
