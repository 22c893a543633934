r"""Files: where the project's shared files live, and how every file is
written and read back safely.

Every file is written atomically (to a temporary name, then ``os.replace``:
:func:`atomic_path`, :func:`atomic_torch_save`), so an interrupted run never
leaves a half-written file behind. Every file pyg_hma reads back is loaded
with ``torch.load(weights_only=True)`` (:func:`torch_load`): tensors and
plain containers only, so a planted or foreign file can never run code.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import os.path as osp
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

PathLike = Union[str, os.PathLike]


class UnreadableFileError(RuntimeError):
    """A file this package reads back is corrupt, truncated, or not a plain
    tensor file (e.g. a pickle of Python objects: refused, never run)."""


class UnusableFolderError(RuntimeError):
    """A folder to write into is a file, or cannot be created or
    written."""


def folder_problem(path: PathLike) -> Optional[str]:
    r"""Why files cannot be written into the folder :obj:`path` (which need
    not exist yet), or ``None``. Judged by creating and removing a probe
    file in it, or in its nearest existing ancestor: a permission check
    alone passes for root even where nothing can be written (``/proc``).
    Leaves nothing behind."""
    path = Path(path).expanduser().absolute()
    where = path
    while not where.exists():
        if where.parent == where:
            return f'{path} cannot be created'
        where = where.parent
    if not where.is_dir():
        return (f'{path} is a file' if where == path
                else f'{where} is a file, so {path} cannot be created')
    try:
        fd, probe = tempfile.mkstemp(prefix='.pyg_hma-probe.', suffix='.tmp',
                                     dir=where)
    except OSError as e:
        return f'{where} cannot be written ({e.strerror or e})'
    os.close(fd)
    os.unlink(probe)
    return None


def shared_dir() -> Path:
    r"""``../shared`` beside the working directory: where a checkout of the
    project finds the offline data mirror and the paper's numbers when run
    from its root (never derived from where the package is installed)."""
    return Path.cwd().parent / 'shared'


def sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    r"""The SHA-256 hex digest of the file at :obj:`path`."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it is renamed onto
    ``path``, on error it is removed. Works for files and folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', suffix='.tmp',
                                dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_torch_save(obj, path: PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + '...'


def torch_load(path: PathLike, what: str = '') -> Any:
    """Loads a file with ``torch.load(weights_only=True)``: tensors and
    plain containers (dict, list, tuple, numbers, strings, ``None``) only.
    No pickled class or function is ever instantiated or called.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        UnreadableFileError: the file holds pickled Python objects (written
            by an older version, or planted: refused, nothing in it ran), or
            it is truncated or corrupt. Its ``reason`` attribute says which,
            without the path.
    """
    label = f' ({what})' if what else ''
    if not osp.isfile(path):
        raise FileNotFoundError(f"No file at '{path}'{label}.")
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        reason = (f'it is not a plain-tensor file ({_first_line(e)}); it was '
                  f'written by an older pyg_hma or by someone else, and '
                  f'nothing in it was run')
        error = UnreadableFileError(f"Refused to load '{path}'{label}: "
                                    f"{reason}. Delete it to rebuild it.")
    except Exception as e:  # truncated zip, bad magic number, EOF, ...
        reason = (f'{type(e).__name__}: {_first_line(e)}; the file is '
                  f'truncated or corrupt')
        error = UnreadableFileError(f"Cannot read '{path}'{label}: {reason}."
                                    f" Delete it to rebuild it.")
    error.reason = reason
    raise error
