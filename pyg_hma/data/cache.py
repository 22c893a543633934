r"""The processed-data cache: one folder per dataset and recipe version.

Processed datasets live under the **cache root** (``--root`` / ``root=``),
default ``$PYG_HMA_ROOT`` or ``~/.cache/pyg_hma``, in
``{root}/processed/{name}-{recipe}/`` (:func:`recipe_dir`). A loader's
*recipe* string names the code that built the folder: bumping it makes the
loader process into a new folder instead of reusing one built by older code.

A folder is built atomically (in a temporary folder renamed into place only
when complete) and marked complete by a ``DONE`` file holding the recipe;
:func:`load_cache` builds a folder that is missing or incomplete, reads it,
and rebuilds it once when it cannot be read. A folder of processed graphs
(:func:`save_graphs`, :func:`read_graphs`) holds

* ``data.pt``: the collated graphs, ``(data_dict, slices)``, plain tensors
  read with ``torch.load(weights_only=True)``;
* ``meta.json``: the dataset's statistics and provenance;
* ``DONE``: the completion marker: the recipe, then the SHA-256 of every
  other file of the folder (``sha256sum`` lines), checked on every load.

Processes of one machine sharing a cache root build a folder once
(:func:`cache_lock`, :func:`load_cache`).

Every file is read with :func:`~pyg_hma.files.torch_load` or as JSON: a
planted or foreign file can never run code. PyG's ``pre_transform.pt`` /
``pre_filter.pt`` side files, which PyG itself loads with
``weights_only=False``, are removed (:func:`remove_pyg_side_files`) before
PyG gets the chance.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, Optional, Sequence, Tuple,
                    TypeVar)

import torch
from torch_geometric.data import Data, InMemoryDataset

from ..files import (PathLike, UnreadableFileError, UnusableFolderError,
                     atomic_path, folder_problem, sha256, torch_load)

ROOT_ENV = 'PYG_HMA_ROOT'
DONE = 'DONE'
GRAPHS_FILE = 'data.pt'
META_FILE = 'meta.json'

T = TypeVar('T')


def default_root() -> Path:
    """The cache folder for processed datasets."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / '.cache' / 'pyg_hma'


def resolve_root(root: Optional[PathLike]) -> Path:
    r""":obj:`root` (default :func:`default_root`), created if needed.

    Raises:
        UnusableFolderError: it is a file, or cannot be created."""
    path = Path(root).expanduser() if root is not None else default_root()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnusableFolderError(
            f"The cache root '{path}' cannot be used "
            f"({folder_problem(path) or e.strerror or e}); give a writable "
            f"folder (--root, ${ROOT_ENV})") from None
    return path


def recipe_dir(root: PathLike, name: str, recipe: str) -> Path:
    """The cache folder of ``name`` processed by recipe version ``recipe``."""
    safe = name.replace('/', '_')
    return Path(root) / 'processed' / f'{safe}-{recipe}'


def is_complete(folder: PathLike) -> bool:
    r"""Whether :obj:`folder` holds its completion marker."""
    return (Path(folder) / DONE).is_file()


def mark_complete(folder: PathLike, recipe: str) -> None:
    r"""Writes the completion marker of :obj:`folder` (the last step of a
    build)."""
    (Path(folder) / DONE).write_text(recipe + '\n')


def load_cache(folder: PathLike, build: Callable[[Path], None],
               read: Callable[[Path], T],
               is_current: Callable[[Path], bool] = lambda folder: True
               ) -> T:
    r"""Returns ``read(folder)``, building the folder first when it is not
    complete (no ``DONE`` marker) or not current.

    Args:
        folder: the cache folder (see :func:`recipe_dir`).
        build: ``build(tmp)`` creates the folder ``tmp`` with its files and
            marker; ``tmp`` is renamed onto :obj:`folder` only when ``build``
            returns.
        read: reads a complete folder; raises
            :class:`~pyg_hma.files.UnreadableFileError` when it cannot.
        is_current: whether a complete folder still matches its sources
            (else it is rebuilt); may raise ``UnreadableFileError`` too.

    A complete cache that cannot be read (truncated, corrupt, a file
    missing, or a file whose SHA-256 no longer matches the one its ``DONE``
    marker recorded when it was built: see :func:`check_digests`) is rebuilt
    once, with a warning; if the rebuilt cache cannot be read either,
    :class:`~pyg_hma.files.UnreadableFileError` is raised.

    Processes may share a cache root: a process builds a folder only while
    it holds the folder's exclusive lock (:func:`cache_lock`), and reads
    one under a shared lock, so two processes that need the same folder
    build it once and never see it half-replaced.
    """
    folder = Path(folder)
    with cache_lock(folder, exclusive=False):  # the usual case: read it
        if is_complete(folder):
            try:
                if is_current(folder):
                    check_digests(folder)
                    return read(folder)
            except UnreadableFileError:
                pass  # rebuilt, with a warning, under the exclusive lock
    with cache_lock(folder, exclusive=True):
        return _load_or_build(folder, build, read, is_current)


def _load_or_build(folder: Path, build: Callable[[Path], None],
                   read: Callable[[Path], T],
                   is_current: Callable[[Path], bool]) -> T:
    def rebuild() -> None:
        with atomic_path(folder) as tmp:  # replaces an existing folder
            build(tmp)
            record_digests(tmp)

    def check_and_read() -> T:
        check_digests(folder)
        return read(folder)

    built = False
    if not is_complete(folder):
        rebuild()
        built = True
    try:
        if not built and not is_current(folder):
            rebuild()
            built = True
        return check_and_read()
    except UnreadableFileError as e:
        if built:
            raise UnreadableFileError(
                f"The cache '{folder}' was just built but cannot be read back "
                f"({e.reason}); check the disk and the cache root.") from None
        warnings.warn(f"Rebuilding the cache '{folder}': {e.reason}.",
                      stacklevel=3)
    rebuild()
    try:
        return check_and_read()
    except UnreadableFileError as e:
        raise UnreadableFileError(
            f"The cache '{folder}' was rebuilt but still cannot be read "
            f"({e.reason}); check the disk and the cache root.") from None


@contextlib.contextmanager
def cache_lock(folder: PathLike, exclusive: bool = True) -> Iterator[None]:
    r"""Holds the lock of the cache folder :obj:`folder`: exclusive to
    build or replace the folder, shared to read it. Waits for the lock.

    The lock is an ``flock`` on a file of :func:`lock_file` (in the
    system's temporary folder, so that nothing is added to the cache root);
    it dies with its process, so a killed build never leaves a stale lock.
    It coordinates the processes of one machine."""
    import fcntl
    path = lock_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_file(folder: PathLike) -> Path:
    r"""The lock file of the cache folder :obj:`folder`:
    ``TMP/pyg_hma-locks-UID/NAME-HASH.lock``, the hash of its real absolute
    path (so that every spelling of the folder gets the same lock)."""
    import hashlib
    import tempfile
    real = os.path.realpath(os.path.expanduser(os.fspath(folder)))
    digest = hashlib.sha256(real.encode()).hexdigest()[:16]
    uid = os.getuid() if hasattr(os, 'getuid') else 'user'
    return (Path(tempfile.gettempdir()) / f'pyg_hma-locks-{uid}'
            / f'{Path(real).name}-{digest}.lock')


def record_digests(folder: PathLike) -> None:
    r"""Appends to the ``DONE`` marker of :obj:`folder` (when it has one)
    the SHA-256 of every other file in it, one ``<digest>  <file>`` line
    each (the format of ``sha256sum``), so that a file changed or removed
    after the build is noticed (:func:`check_digests`)."""
    folder = Path(folder)
    marker = folder / DONE
    if not marker.is_file():
        return
    lines = [f'{sha256(p)}  {p.relative_to(folder).as_posix()}'
             for p in sorted(folder.rglob('*'))
             if p.is_file() and p != marker]
    with open(marker, 'a') as f:
        f.write(''.join(line + '\n' for line in lines))


def check_digests(folder: PathLike) -> None:
    r"""Raises :class:`~pyg_hma.files.UnreadableFileError` when a file that
    the ``DONE`` marker of :obj:`folder` lists (:func:`record_digests`) is
    missing or no longer has the SHA-256 recorded when the folder was
    built. A marker without digests (written by an older version) checks
    nothing. The same check by hand: ``tail -n +2 DONE | sha256sum -c``
    inside the folder."""
    folder = Path(folder)
    for line in (folder / DONE).read_text().splitlines()[1:]:
        digest, sep, name = line.partition('  ')
        if not sep or len(digest) != 64:
            _unreadable(folder, f'its {DONE} marker has a malformed line '
                        f'{line!r}')
        path = folder / name
        if not path.is_file():
            _unreadable(folder, f'its {name} is missing')
        if sha256(path) != digest:
            _unreadable(folder, f'its {name} changed after it was built '
                        f'(its SHA-256 is not the one {DONE} recorded)')


def verify_root(root: PathLike) -> Dict[Path, Optional[str]]:
    r"""Checks every complete cache folder of :obj:`root`
    (``root/processed/*`` with a ``DONE`` marker) against the digests its
    marker recorded (:func:`check_digests`): ``{folder: problem}``, the
    problem ``None`` for a folder whose files are those it was built with,
    and :data:`NO_DIGESTS` for a folder built by an older version, whose
    marker records none. Reads every file once; changes nothing."""
    out: Dict[Path, Optional[str]] = {}
    for folder in sorted((Path(root) / 'processed').glob('*')):
        if not folder.is_dir() or folder.name.startswith('.') \
                or not is_complete(folder):
            continue
        if len((folder / DONE).read_text().splitlines()) < 2:
            out[folder] = NO_DIGESTS
            continue
        try:
            check_digests(folder)
            out[folder] = None
        except UnreadableFileError as e:
            out[folder] = e.reason
    return out


#: :func:`verify_root`'s verdict on a folder whose marker records no
#: digests.
NO_DIGESTS = 'no digests'


def _unreadable(folder: Path, reason: str):
    error = UnreadableFileError(f"The cache '{folder}' cannot be used: "
                                f"{reason}. Delete it to rebuild it.")
    error.reason = reason
    raise error


def read_cache_file(folder: PathLike, file: str, what: str = '') -> Any:
    r""":func:`~pyg_hma.files.torch_load` of ``folder/file``; the error's
    ``reason`` names the file."""
    try:
        return torch_load(Path(folder) / file, what)
    except FileNotFoundError:  # deleted behind its completion marker
        _unreadable(Path(folder), f'its {file} is missing')
    except UnreadableFileError as e:
        e.reason = f'its {file} cannot be read ({e.reason})'
        raise


def read_meta(folder: PathLike) -> Dict[str, Any]:
    r"""The ``meta.json`` of a cache folder.

    Raises:
        UnreadableFileError: the file is missing or is not JSON.
    """
    path = Path(folder) / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        error = UnreadableFileError(f"Cannot read '{path}': {e}.")
        error.reason = f'its {META_FILE} cannot be read ({e})'
        raise error from None


# --------------------------------------------------------------------------
# Processed graphs
# --------------------------------------------------------------------------
class InMemoryGraphs(InMemoryDataset):
    r"""Collated graphs held in memory (a processed cache, an export, ...);
    indexing with a tensor of indices gives a split without copying the
    graphs.

    Args:
        data (Data): the collated graphs.
        slices (dict): the slices of :meth:`InMemoryDataset.collate`.
        name (str): the dataset name, for :meth:`__repr__`.
    """
    def __init__(self, data: Data, slices: Dict[str, torch.Tensor],
                 name: str):
        super().__init__(root=None, log=False)
        self.name = name
        self.data, self.slices = data, slices

    def __repr__(self) -> str:
        return f'{self.name}({len(self)})'


def collate(graphs: Sequence[Data]
            ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    r"""The graphs as ``(data_dict, slices)``: plain tensors, the form every
    file of graphs is written in."""
    data, slices = InMemoryDataset.collate(list(graphs))
    return data.to_dict(), slices


def save_graphs(folder: PathLike, graphs: Sequence[Data],
                meta: Dict[str, Any], recipe: str) -> None:
    r"""Writes a cache folder of processed graphs: ``data.pt``,
    ``meta.json`` (:obj:`meta` must be JSON-serializable) and the ``DONE``
    marker (last)."""
    folder = Path(folder)
    folder.mkdir()
    torch.save(collate(graphs), folder / GRAPHS_FILE)
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))
    mark_complete(folder, recipe)


def read_graphs(folder: PathLike, name: str, what: str = ''
                ) -> Tuple[InMemoryGraphs, Dict[str, Any]]:
    r"""Reads a folder written by :func:`save_graphs`: the graphs and their
    ``meta.json``.

    Raises:
        UnreadableFileError: a file is missing, corrupt, or not a plain
            tensor / JSON file.
    """
    meta = read_meta(folder)
    out = read_cache_file(folder, GRAPHS_FILE, what)
    # Older text caches (PyG's InMemoryDataset.save) add PyG's data class
    # as a third item: not needed, the graphs are plain Data.
    if not (isinstance(out, tuple) and len(out) in (2, 3)
            and isinstance(out[0], dict) and isinstance(out[1], dict)):
        error = UnreadableFileError(
            f"'{Path(folder) / GRAPHS_FILE}' is not a processed graph file "
            f"of pyg_hma; delete its folder to rebuild it.")
        error.reason = f'its {GRAPHS_FILE} is not a processed graph file'
        raise error
    return InMemoryGraphs(Data.from_dict(out[0]), out[1], name), meta


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
