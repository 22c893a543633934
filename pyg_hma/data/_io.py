"""Where data comes from and how processed files are written.

Three places are involved:

* the **cache root** (``--root`` / ``root=``), default ``$PYG_HMA_ROOT`` or
  ``~/.cache/pyg_hma``: processed datasets live here;
* the **offline mirror**: ``$PYG_HMA_MIRROR`` if set, else ``../shared/data``
  relative to the project root when that folder exists, else none;
* the **usual download** (TU Dortmund, OGB, ...), used only when no mirror is found.

Mirror files are checked against the mirror's ``SHA256SUMS``. Every processed
file is written atomically (to a temporary name, then ``os.replace``) so an
interrupted run never leaves a half-written cache behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import os.path as osp
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import torch

PathLike = Union[str, os.PathLike]

MIRROR_ENV = 'PYG_HMA_MIRROR'
ROOT_ENV = 'PYG_HMA_ROOT'
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MissingDataError(FileNotFoundError):
    """A dataset file could not be found in the mirror or downloaded."""


class ChecksumError(RuntimeError):
    """A mirror file does not match the checksum listed in ``SHA256SUMS``."""


def default_root() -> Path:
    """The cache folder for processed datasets."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / '.cache' / 'pyg_hma'


def resolve_root(root: Optional[PathLike]) -> Path:
    path = Path(root).expanduser() if root is not None else default_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_mirror(mirror: Optional[PathLike] = None) -> Optional[Path]:
    """Returns the offline mirror folder, or ``None`` when there is none.

    An explicit ``mirror`` argument or ``$PYG_HMA_MIRROR`` must exist (a typo
    should not silently fall back to downloading); the default
    ``../shared/data`` is used only when present.
    """
    explicit = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            src = 'mirror=' if mirror is not None else f'${MIRROR_ENV}'
            raise MissingDataError(
                f"The offline data mirror given by {src} does not exist: "
                f"'{path}'. Point it at a folder laid out like the project's "
                f"shared/data mirror, or unset it to download.")
        return path
    default = PROJECT_ROOT.parent / 'shared' / 'data'
    return default if default.is_dir() else None


def _read_checksums(mirror: Path) -> Dict[str, str]:
    sums = {}
    file = mirror / 'SHA256SUMS'
    if not file.exists():
        return sums
    for line in file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip('*').lstrip('./')] = digest.lower()
    return sums


def sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


_VERIFIED: Dict[str, str] = {}  # path -> digest, so a file is hashed once per process


def mirror_file(relpath: str, mirror: Optional[PathLike] = None,
                what: str = '') -> Path:
    """Returns the verified path of ``relpath`` inside the offline mirror.

    Raises:
        MissingDataError: no mirror, or the file is not in it.
        ChecksumError: the file's SHA-256 differs from ``SHA256SUMS``.
    """
    root = find_mirror(mirror)
    label = f' ({what})' if what else ''
    if root is None:
        raise MissingDataError(
            f"No offline mirror found for '{relpath}'{label}: set "
            f"${MIRROR_ENV} to a folder holding it, pass --mirror, or place "
            f"it at '{PROJECT_ROOT.parent / 'shared' / 'data' / relpath}'.")
    path = root / relpath
    if not path.is_file():
        raise MissingDataError(
            f"'{relpath}'{label} is missing from the offline mirror: looked "
            f"for '{path}'. Copy the file there (see the mirror's README); "
            f"on a machine with internet access, run without a mirror (no "
            f"${MIRROR_ENV} and no ../shared/data beside the project) to "
            f"download it instead.")
    sums = _read_checksums(root)
    expected = sums.get(relpath)
    if expected is not None:
        key = str(path.resolve())
        if _VERIFIED.get(key) != expected:
            actual = sha256(path)
            if actual != expected:
                raise ChecksumError(
                    f"Checksum mismatch for '{path}'{label}: SHA256SUMS lists "
                    f"{expected}, the file hashes to {actual}. The file is "
                    f"corrupt or was replaced; restore it from its source.")
            _VERIFIED[key] = expected
    return path


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


def torch_load(path: PathLike):
    """Loads a file this package wrote (trusted: it holds PyG objects)."""
    return torch.load(path, weights_only=False)


def recipe_dir(root: PathLike, name: str, recipe: str) -> Path:
    """The cache folder of ``name`` processed by recipe version ``recipe``.

    Bumping a loader's recipe string makes it reprocess into a new folder
    instead of reusing a cache built by older code."""
    safe = name.replace('/', '_')
    return Path(root) / 'processed' / f'{safe}-{recipe}'


def is_complete(folder: PathLike) -> bool:
    return osp.isfile(osp.join(folder, 'DONE'))
