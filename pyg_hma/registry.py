r"""Name registries: one per concept (methods, backbones, datasets).

Each concept is a small typed *spec* registered under its name where it is
defined; everything else (model building, the engine, results, the runners'
command line, ``benchmarks/speed.py``) reads the registry. An unknown name
raises :class:`UnknownNameError` with the list of valid names, everywhere.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, Mapping, TypeVar

T = TypeVar('T')


class UnknownNameError(ValueError, LookupError):
    r"""A method, backbone or dataset name that no registry entry has. The
    message lists the valid names."""


class Registry(Mapping[str, T], Generic[T]):
    r"""An ordered, read-only mapping from names to specs, filled with
    :meth:`register` (in registration order: the order of tables and
    choices).

    Args:
        kind: what the entries are (``'method'``, ``'backbone'``, ...), for
            error messages.
    """
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, spec: T) -> T:
        r"""Adds :obj:`spec` under ``spec.name``; returns it (so it can
        decorate or stand in an assignment)."""
        name = getattr(spec, 'name')
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = spec
        return spec

    def unregister(self, name: str) -> T:
        r"""Removes and returns the entry :obj:`name` (for tests and
        interactive sessions)."""
        spec = self[name]
        del self._entries[name]
        return spec

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self._unknown(name, self.kind) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default=None):
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, where: Callable[[T], bool] = lambda spec: True
              ) -> tuple:
        r"""The registered names whose spec satisfies :obj:`where`."""
        return tuple(n for n, s in self._entries.items() if where(s))

    def check(self, names, what: str = '') -> None:
        r"""Raises :class:`UnknownNameError` for the first unknown name in
        :obj:`names`."""
        for name in names:
            if name not in self._entries:
                raise self._unknown(name, what or self.kind)

    def _unknown(self, name, what: str) -> UnknownNameError:
        close = [n for n in self._entries
                 if isinstance(name, str) and n.lower() == name.lower()]
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        return UnknownNameError(f"Unknown {what} {name!r}{hint}; choose one "
                                f"of {', '.join(self._entries)}")

    def __repr__(self) -> str:
        return f'Registry({self.kind!r}, [{", ".join(self._entries)}])'
