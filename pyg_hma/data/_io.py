"""Where data comes from and how processed files are written.

Three places are involved:

* the **cache root** (``--root`` / ``root=``), default ``$PYG_HMA_ROOT`` or
  ``~/.cache/pyg_hma``: processed datasets live here;
* the **offline mirror**: ``$PYG_HMA_MIRROR`` if set, else ``../shared/data``
  relative to the working directory when that folder exists, else none;
* the **usual download** (TU Dortmund, OGB, ...), used only when no mirror is found.

Mirror files are checked against the mirror's ``SHA256SUMS``; a mirror
without one, with an empty or malformed one, or with a file it does not list
is an error (:class:`ChecksumError`), never an unchecked read. Every processed
file is written atomically (to a temporary name, then ``os.replace``) so an
interrupted run never leaves a half-written cache behind.

Every file this package reads back is loaded with
``torch.load(weights_only=True)`` (:func:`torch_load`): tensors and plain
containers only, so a planted or foreign file can never run code. PyG's
``pre_transform.pt`` / ``pre_filter.pt`` side files, which PyG itself loads
with ``weights_only=False``, are removed (:func:`remove_pyg_side_files`)
before PyG gets the chance.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import os.path as osp
import pickle
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import torch

PathLike = Union[str, os.PathLike]

MIRROR_ENV = 'PYG_HMA_MIRROR'
ROOT_ENV = 'PYG_HMA_ROOT'


def shared_dir() -> Path:
    r"""``../shared`` beside the working directory: where a checkout of the
    project finds the offline data mirror and the paper's numbers when run
    from its root (never derived from where the package is installed)."""
    return Path.cwd().parent / 'shared'


class MissingDataError(FileNotFoundError):
    """A dataset file could not be found in the mirror or downloaded."""


class ChecksumError(RuntimeError):
    """A mirror file does not match the checksum listed in ``SHA256SUMS``."""


class UnreadableFileError(RuntimeError):
    """A file this package reads back is corrupt, truncated, or not a plain
    tensor file (e.g. a pickle of Python objects: refused, never run)."""


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
    default = shared_dir() / 'data'
    return default if default.is_dir() else None


_SUMS_LINE = re.compile(r'^([0-9a-fA-F]{64})\s+\*?(\S.*)$')


def _sums_remedy(root: Path) -> str:
    return (f"regenerate it from files checked against their sources (cd "
            f"'{root}' && sha256sum FILES > SHA256SUMS)")


def _read_checksums(mirror: Path) -> Dict[str, str]:
    """The digests of ``mirror/SHA256SUMS`` (``sha256sum`` format), keyed by
    path relative to the mirror.

    Raises:
        ChecksumError: the file is missing, lists nothing, or has a line that
            is not ``<64 hex digits> <file name>`` (blank lines and ``#``
            comments are allowed).
    """
    file = mirror / 'SHA256SUMS'
    if not file.is_file():
        raise ChecksumError(
            f"The offline mirror '{mirror}' has no SHA256SUMS, so its files "
            f"cannot be verified: {_sums_remedy(mirror)}.")
    sums = {}
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        match = _SUMS_LINE.match(line)
        if match is None:
            raise ChecksumError(
                f"'{file}' line {number} is not '<64 hex digits>  <file "
                f"name>' (got {line[:80]!r}): fix the line or "
                f"{_sums_remedy(mirror)}.")
        digest, name = match.groups()
        while name.startswith('./'):
            name = name[2:]
        sums[name] = digest.lower()
    if not sums:
        raise ChecksumError(
            f"'{file}' lists no checksums, so no mirror file can be "
            f"verified: {_sums_remedy(mirror)}.")
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
        ChecksumError: the file cannot be verified (the mirror has no
            ``SHA256SUMS``, it is empty or malformed, or it has no line for
            the file) or its SHA-256 differs from ``SHA256SUMS``.
    """
    root = find_mirror(mirror)
    label = f' ({what})' if what else ''
    if root is None:
        raise MissingDataError(
            f"No offline mirror found for '{relpath}'{label}: set "
            f"${MIRROR_ENV} to a folder holding it, pass --mirror, or place "
            f"it at '{shared_dir() / 'data' / relpath}'.")
    path = root / relpath
    if not path.is_file():
        raise MissingDataError(
            f"'{relpath}'{label} is missing from the offline mirror: looked "
            f"for '{path}'. Copy the file there (see the mirror's README); "
            f"on a machine with internet access, run without a mirror (no "
            f"${MIRROR_ENV} and no ../shared/data beside the working directory) to "
            f"download it instead.")
    expected = _read_checksums(root).get(relpath)
    if expected is None:
        raise ChecksumError(
            f"'{relpath}'{label} has no line in '{root / 'SHA256SUMS'}', so "
            f"it cannot be verified: check the file against its source, then "
            f"add its line (cd '{root}' && sha256sum '{relpath}' >> "
            f"SHA256SUMS).")
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
            it is truncated or corrupt.
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


def remove_pyg_side_files(processed_dir: PathLike) -> None:
    """Deletes PyG's ``pre_transform.pt`` and ``pre_filter.pt`` in
    ``processed_dir``.

    PyG's ``Dataset._process`` reads them with ``torch.load(weights_only=
    False)`` (only to warn when the pre-transform changed), so a planted file
    there would run code. This package never passes a pre-transform or a
    pre-filter, so the files carry nothing it needs."""
    for name in ('pre_transform.pt', 'pre_filter.pt'):
        path = Path(processed_dir) / name
        if path.is_file() or path.is_symlink():
            path.unlink()


def recipe_dir(root: PathLike, name: str, recipe: str) -> Path:
    """The cache folder of ``name`` processed by recipe version ``recipe``.

    Bumping a loader's recipe string makes it reprocess into a new folder
    instead of reusing a cache built by older code."""
    safe = name.replace('/', '_')
    return Path(root) / 'processed' / f'{safe}-{recipe}'


def is_complete(folder: PathLike) -> bool:
    return osp.isfile(osp.join(folder, 'DONE'))


def load_cache(folder: PathLike, file: str, build: Callable[[Path], None],
               what: str = '') -> Any:
    """Returns :func:`torch_load` of ``folder/file``, building the folder
    first when it is not complete (no ``DONE`` marker).

    ``build(tmp)`` must create the folder ``tmp`` with ``file`` and ``DONE``
    in it; ``tmp`` is renamed onto ``folder`` only when ``build`` returns.
    A complete cache whose file cannot be read (truncated, corrupt, or not a
    plain-tensor file) is rebuilt once; if the rebuilt file cannot be read
    either, :class:`UnreadableFileError` is raised.
    """
    folder = Path(folder)
    built = False
    if not is_complete(folder):
        with atomic_path(folder) as tmp:
            build(tmp)
        built = True
    try:
        return torch_load(folder / file, what)
    except UnreadableFileError as e:
        if built:
            raise UnreadableFileError(
                f"The cache '{folder}' was just built but cannot be read back "
                f"({e.reason}); check the disk and the cache root.") from None
        warnings.warn(f"Rebuilding the cache '{folder}': '{file}' cannot be "
                      f"read ({e.reason}).", stacklevel=2)
    with atomic_path(folder) as tmp:  # replaces the unreadable folder
        build(tmp)
    try:
        return torch_load(folder / file, what)
    except UnreadableFileError as e:
        raise UnreadableFileError(
            f"The cache '{folder}' was rebuilt but still cannot be read "
            f"({e.reason}); check the disk and the cache root.") from None
