r"""A sweep's Optuna study on disk (``OUT/study.db``): checking the file
before anything is written, the finished trials, requeueing interrupted
ones, and the folder's lock. Optuna is an optional dependency, imported
on first use."""
from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from pathlib import Path

from .sweep_space import OPTUNA_MISSING, SweepError

#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b'SQLite format 3\x00'


def check_study_file(path: Path) -> None:
    r"""Raises :class:`SweepError` (one line) when :obj:`path` exists and
    is no readable SQLite database: random bytes, a truncated or corrupt
    copy. Reads only (an empty file is an empty database); creates and
    changes nothing."""
    path = Path(path)
    if not path.exists():
        return
    remedy = (f'move it aside (or use another --out) to start the sweep '
              f'afresh, or continue from its summary with --continue-from '
              f'{path.parent / "best.json"}')
    if not path.is_file():
        raise SweepError(f'{path} is not a file; {remedy}')
    try:
        with open(path, 'rb') as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise SweepError(f'{path} cannot be read ({e.strerror}); '
                         f'{remedy}') from None
    if not head:
        return
    if head != SQLITE_MAGIC:
        raise SweepError(f'{path} is not a sweep study (not an SQLite '
                         f'database); {remedy}')
    try:
        con = sqlite3.connect(f'{path.resolve().as_uri()}?mode=ro', uri=True)
        try:
            verdict = con.execute('PRAGMA quick_check').fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise SweepError(f'{path} is a damaged sweep study ({e}: truncated '
                         f'or corrupt); {remedy}') from None
    if not verdict or verdict[0] != 'ok':
        raise SweepError(f'{path} is a damaged sweep study (SQLite: '
                         f'{verdict[0] if verdict else "no answer"}); '
                         f'{remedy}')


def storage_errors() -> tuple:
    r"""The exceptions a damaged study raises while Optuna opens it."""
    import sqlalchemy.exc
    errors = [sqlalchemy.exc.SQLAlchemyError, sqlite3.DatabaseError]
    try:
        from optuna.exceptions import StorageInternalError
        errors.append(StorageInternalError)
    except ImportError:
        pass
    return tuple(errors)


def complete_trials(study):
    r"""The study's finished trials."""
    from optuna.trial import TrialState
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, ))


def requeue_interrupted(study):
    r"""Trials left running by a stopped sweep (or failed) whose grid point
    has no finished trial are marked failed and queued again with the same
    grid point (the sweep's lock guarantees no other process runs them)."""
    import optuna
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    done = {t.system_attrs.get('grid_id') for t in trials
            if t.state == TrialState.COMPLETE}
    queued = {t.system_attrs.get('grid_id') for t in trials
              if t.state == TrialState.WAITING}
    for t in trials:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_state_values(t._trial_id,
                                                  TrialState.FAIL)
        elif t.state != TrialState.FAIL:
            continue
        grid_id = t.system_attrs.get('grid_id')
        if grid_id is None or grid_id in done | queued:
            continue
        # GridSampler keeps the grid point of a trial that carries one.
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params,
            distributions=t.distributions,
            system_attrs={'grid_id': grid_id,
                          'search_space': t.system_attrs['search_space'],
                          'retry_of': t.number}))
        queued.add(grid_id)


@contextlib.contextmanager
def folder_lock(path: Path):
    with open(path, 'w') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f'another sweep is using {path.parent}') from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError(OPTUNA_MISSING) from None
    return optuna
