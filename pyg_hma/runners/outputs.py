r"""An output folder that never loses a finished result.

A runner invocation takes the folder (``--out``) with :class:`OutputFolder`:

* **lock**: one invocation at a time (``OUT/.lock``, an exclusive
  ``flock``); a second one fails at once naming the first one's PID;
* **leftovers**: temporary files and folders of writes that were killed
  (``.NAME.*.tmp``, see :func:`~pyg_hma.files.atomic_path`) are removed;
* **conflicts**: before anything trains, :meth:`OutputFolder.conflicts`
  lists every existing result or checkpoint the invocation would replace:
  a finished run without ``--resume``, or any run of another configuration.
  The runner refuses up front, naming the files; :meth:`OutputFolder.
  move_aside` (``--force``) moves them to ``OUT/.superseded/TIME/``, and
  nothing is ever deleted;
* **logs**: one log file per run attempt (:func:`attempt_log`).
"""
from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path
from typing import Collection, Dict, Iterable, List, Optional, Tuple

from ..files import UnreadableFileError, torch_load
from ..train.results import read_result

LOCK_NAME = '.lock'
SUPERSEDED = '.superseded'


class OutputInUseError(RuntimeError):
    r"""Another invocation holds the output folder."""


class OutputConflictError(RuntimeError):
    r"""The invocation would replace existing results (listed in
    :attr:`files`)."""
    def __init__(self, message: str, files: List[Path]):
        super().__init__(message)
        self.files = files


class OutputFolder:
    r"""Holds an output folder for one invocation (a context manager).

    Args:
        root: the output folder (created if needed).
    """
    def __init__(self, root: os.PathLike):
        self.root = Path(root)
        self._lock_file = None
        #: The checkpoints :meth:`conflicts` found unreadable (truncated or
        #: corrupt), with the reason.
        self.unreadable: Dict[Path, str] = {}

    def __enter__(self) -> 'OutputFolder':
        import fcntl
        self.root.mkdir(parents=True, exist_ok=True)
        f = open(self.root / LOCK_NAME, 'a+')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or 'unknown'
            f.close()
            raise OutputInUseError(
                f"--out {self.root} is in use by another run (PID {owner}); "
                f"wait for it to finish or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f'{os.getpid()}\n')
        f.flush()
        self._lock_file = f
        self.remove_leftovers()
        return self

    def __exit__(self, *exc):
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def remove_leftovers(self) -> List[Path]:
        r"""Removes the temporary files of interrupted atomic writes."""
        removed = []
        for path in sorted(self.root.rglob('.*.tmp')):
            if SUPERSEDED in path.relative_to(self.root).parts:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def conflicts(self, stem: Path, result_fingerprint: str,
                  checkpoint_fingerprints: Collection[str],
                  resume: bool) -> List[Path]:
        r"""The files of run :obj:`stem` (``.../METHOD/seedS``) that the
        requested run would replace: its result unless it is the same
        configuration and :obj:`resume` keeps it; its checkpoint unless
        :obj:`resume` continues it under the same configuration (one of
        :obj:`checkpoint_fingerprints`: a seed-batched run may also have
        fallen back to a run of its own)."""
        out = []
        result = stem.with_suffix('.json')
        if result.exists():
            rec = read_result(result)
            same = rec is not None and \
                rec.get('run_fingerprint') == result_fingerprint
            if not (resume and same):
                out.append(result)
        ckpt = stem.with_suffix('.ckpt')
        if ckpt.exists():
            if not resume:
                out.append(ckpt)
                return out
            try:
                found = _checkpoint_fingerprint(ckpt)
            except UnreadableFileError as e:
                self.unreadable[ckpt] = getattr(e, 'reason', str(e))
                found = None
            if found not in checkpoint_fingerprints:
                out.append(ckpt)
        return out

    def move_aside(self, files: Iterable[Path]) -> Optional[Path]:
        r"""Moves :obj:`files` (and their logs and saved models) under
        ``OUT/.superseded/TIME/``, keeping their relative paths; returns
        that folder."""
        files = list(files)
        if not files:
            return None
        stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')
        dest_root = self.root / SUPERSEDED / stamp
        stems = {f.with_suffix('') for f in files}
        extra = [p for s in stems for p in s.parent.glob(s.name + '.*')
                 if p not in files]
        for path in files + extra:
            dest = dest_root / path.relative_to(self.root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        return dest_root


def _checkpoint_fingerprint(path: Path) -> Optional[str]:
    r"""The fingerprint a checkpoint was written under (``None``: it has
    none). Raises :class:`~pyg_hma.files.UnreadableFileError` when the file
    is truncated or corrupt."""
    state = torch_load(path, what='checkpoint')
    return state.get('fingerprint') if isinstance(state, dict) else None


def describe_unreadable(unreadable: Dict[Path, str], root: Path,
                        force_target: Path) -> str:
    r"""The error line for checkpoints that cannot be read on
    ``--resume``."""
    (first, reason), more = next(iter(unreadable.items())), len(unreadable)
    name = str(first.relative_to(root)) if root in first.parents \
        else str(first)
    others = f' (and {more - 1} more)' if more > 1 else ''
    return (f'--out {root}: the checkpoint {name}{others} cannot be read '
            f'({reason}), so its run cannot be resumed. Delete it to start '
            f'that run over, or use --force to move it aside (into '
            f'{force_target})')


def attempt_log(stem: Path) -> Path:
    r"""The log file of a new attempt of run :obj:`stem`: ``seedS.log``,
    then ``seedS.attempt2.log``, ``seedS.attempt3.log``, ..."""
    first = stem.with_suffix('.log')
    if not first.exists():
        return first
    n = 2
    while stem.with_name(f'{stem.name}.attempt{n}.log').exists():
        n += 1
    return stem.with_name(f'{stem.name}.attempt{n}.log')


def describe_conflicts(files: List[Path], root: Path,
                       limit: int = 5) -> Tuple[str, str]:
    r"""``(what, listing)`` for an error message."""
    names = [str(f.relative_to(root)) if root in f.parents else str(f)
             for f in files]
    more = f' and {len(names) - limit} more' if len(names) > limit else ''
    return f'{len(files)} file(s)', ', '.join(names[:limit]) + more
