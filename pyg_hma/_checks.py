r"""Checks shared by the package's configuration dataclasses."""
import dataclasses

_KINDS = {'int': lambda v: isinstance(v, int),
          'float': lambda v: isinstance(v, (int, float)),
          'str': lambda v: isinstance(v, str)}


def check_field_types(config) -> None:
    r"""Raises :class:`TypeError` naming the first field of the dataclass
    instance :obj:`config` whose value is not of its annotated type
    (``int``, ``float`` (an ``int`` passes), ``str``, or ``Optional`` of
    one; a ``bool`` is no number). Other annotations are not checked. The
    annotations are read as text (``from __future__ import
    annotations``)."""
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        if value is None and kind.startswith('Optional['):
            continue
        kind = kind.replace('Optional[', '').rstrip(']')
        ok = _KINDS.get(kind)
        if ok is not None and (isinstance(value, bool) or not ok(value)):
            raise TypeError(f'{f.name} must be {kind}, got {value!r}')
