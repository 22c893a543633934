r"""Where raw data comes from: the offline mirror, checked file by file.

A loader reads a dataset's raw files, in order of preference, from

* the **offline mirror**: ``$PYG_HMA_MIRROR`` if set, else ``../shared/data``
  relative to the working directory when that folder exists, else none;
* the **usual download** (TU Dortmund, OGB, ...), used only when no mirror
  is found.

Mirror files are checked against the mirror's ``SHA256SUMS``; a mirror
without one, with an empty or malformed one, or with a file it does not list
is an error (:class:`ChecksumError`), never an unchecked read.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Optional

from ..files import PathLike, sha256, shared_dir

MIRROR_ENV = 'PYG_HMA_MIRROR'


class MissingDataError(FileNotFoundError):
    """A dataset file could not be found in the mirror or downloaded."""


class ChecksumError(RuntimeError):
    """A mirror file does not match the checksum listed in ``SHA256SUMS``."""


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
