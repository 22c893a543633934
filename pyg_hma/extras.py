r"""The optional parts of the install and the one line that names a missing
one.

``pip install pyg_hma`` brings torch, PyG and numpy: enough for
:class:`~pyg_hma.nn.HMAReadout`, :class:`~pyg_hma.nn.HMAClassifier` and
:class:`~pyg_hma.nn.MomentumEncoder`. The runners, the datasets and the
reproduction report need the ``benchmarks`` extra
(``pip install 'pyg_hma[benchmarks]'``). Their command lines run inside
:func:`needs_extra`, so a missing extra is one line and exit status 2, not a
traceback. (The runners train from exported splits, ``--exported``, with
torch and PyG alone: they ask for the extra only when a step needs it.)
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

#: The import names each extra brings (``extra -> modules``).
EXTRAS: Dict[str, Tuple[str, ...]] = {
    'benchmarks': ('ogb', 'rdkit', 'sklearn', 'scipy', 'pandas', 'tqdm',
                   'matplotlib'),
    'sweep': ('optuna',),
    'ray': ('ray',),
    'tensorboard': ('tensorboard',),
}


def install_hint(extra: str, what: str = 'the runners') -> str:
    r"""The one line that names the missing :obj:`extra` and how to
    install it."""
    return (f"pyg_hma: {what} need the {extra} extra: "
            f"pip install 'pyg_hma[{extra}]'")


def missing(extra: str = 'benchmarks') -> List[str]:
    r"""The modules of :obj:`extra` (a key of :data:`EXTRAS`) that cannot
    be imported here; found without importing them."""
    out = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def require(extra: str = 'benchmarks', what: str = 'the runners',
            modules: Optional[Sequence[str]] = None) -> None:
    r"""Exits with status 2 and :func:`install_hint`'s line on standard
    error when a module of :obj:`extra` (or only those of :obj:`modules`
    among them) is missing; returns otherwise. A command line calls it
    before any work when it knows it will need the extra."""
    if set(missing(extra)) & set(modules or EXTRAS[extra]):
        print(install_hint(extra, what), file=sys.stderr)
        raise SystemExit(2)


def is_missing_extra(error: BaseException, extra: str = 'benchmarks'
                     ) -> bool:
    r"""Whether :obj:`error` is the import of a module of :obj:`extra`
    that is not installed."""
    name = getattr(error, 'name', None) or ''
    return (isinstance(error, ModuleNotFoundError)
            and name.split('.')[0] in EXTRAS[extra])


@contextlib.contextmanager
def needs_extra(extra: str = 'benchmarks', what: str = 'the runners'
                ) -> Iterator[None]:
    r"""Turns the import of a missing module of :obj:`extra` inside the
    block into :func:`install_hint`'s line on standard error and
    :class:`SystemExit` with status 2."""
    try:
        yield
    except ModuleNotFoundError as e:
        if not is_missing_extra(e, extra):
            raise
        print(install_hint(extra, what), file=sys.stderr)
        raise SystemExit(2) from None


def asks_for_help(argv) -> bool:
    r"""Whether a command line (:obj:`argv`, :obj:`None` for
    :data:`sys.argv`) only asks for its help."""
    args = sys.argv[1:] if argv is None else list(argv)
    return any(a in ('-h', '--help') for a in args)
