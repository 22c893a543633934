"""The package's layers: every import of a project module goes down (or
sideways among peers), never up, no module-level import cycle, and no
function-local imports of project modules.

Order, top to bottom::

    study > runners > train > {models, data, loader, methods} > nn > top

``top`` is the top-level modules (``files``, ``registry``, ``_checks``);
the package itself (``pyg_hma/__init__.py``, the public face re-exporting
:mod:`pyg_hma.nn`) counts as ``nn``. Imports are read with :mod:`ast`, those
inside functions included (only optional third-party dependencies such as
optuna, matplotlib, ray or tensorboard may be imported inside a function).

Known violations in files that other people own are listed in
:data:`ALLOWED` (one entry per file and imported module, with the reason):
remove an entry once its file is fixed (:func:`test_allow_list_is_current`
then asks for it).

It also keeps the modules small: no module over :data:`MAX_MODULE_LINES`
lines, no function over :data:`MAX_FUNCTION_LINES` (but those of
:data:`LONG_FUNCTIONS`).
"""
import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'pyg_hma'

LEVELS = {'study': 5, 'runners': 4, 'train': 3, 'models': 2, 'data': 2,
          'loader': 2, 'methods': 2, 'nn': 1, 'root': 1, 'top': 0}

#: Violations in files owned by others, kept visible here:
#: ``(file relative to the package, kind, imported module) -> why``; kind
#: is ``'upward'``, ``'function-local'`` or ``'cycle'``. Remove an entry
#: when its file is fixed.
ALLOWED: Dict[Tuple[str, str, str], str] = {
    # pyg_hma/train/distributed.py
    ('train/distributed.py', 'function-local', 'pyg_hma.loader.factories'):
        '_is_graph_dataset imported inside a function',
    ('train/distributed.py', 'function-local', 'pyg_hma.loader.device'):
        'DeviceGraphLoader imported inside a function',
    ('train/distributed.py', 'function-local', 'pyg_hma.nn'):
        'HMAReadout imported inside a function',
    ('train/distributed.py', 'function-local', 'pyg_hma.nn.utils'):
        'gather_from_all_ranks imported inside a function',
    # pyg_hma/runners/execute.py
    ('runners/execute.py', 'function-local', 'pyg_hma.data'):
        'load_dataset imported inside SplitCache.__call__',
    ('runners/execute.py', 'function-local', 'pyg_hma.train.curves'):
        'TensorBoardCurves imported inside _curves',
    ('runners/execute.py', 'function-local', 'pyg_hma.train.seed_batch'):
        'fit_seeds imported inside a function',
    # pyg_hma/loader/factories.py
    ('loader/factories.py', 'function-local', 'pyg_hma.loader.device'):
        'DeviceGraphLoader imported inside a function',
}


class Import(NamedTuple):
    file: str          # relative to the package, e.g. 'study/report.py'
    module: str        # the importing module, e.g. 'pyg_hma.study.report'
    target: str        # the imported project module
    local: bool        # inside a function
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def is_module(name: str, root: Path = ROOT) -> bool:
    r"""Whether :obj:`name` is a module or package of the project."""
    path = root.joinpath(*name.split('.'))
    return path.with_suffix('.py').is_file() or \
        (path / '__init__.py').is_file()


def layer(module: str, root: Path = ROOT) -> str:
    parts = module.split('.')
    if len(parts) == 1:
        return 'root'
    if (root / 'pyg_hma' / parts[1]).is_dir():
        return parts[1]
    return 'top'


def _imports_of(path: Path, root: Path) -> Iterator[Import]:
    module = module_name(path, root)
    package = module if path.name == '__init__.py' else \
        module.rpartition('.')[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = str(path.relative_to(root / 'pyg_hma'))

    def visit(node: ast.AST, local: bool):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (
                ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split('.')[0] == 'pyg_hma':
                        yield Import(rel, module, alias.name, local,
                                     child.lineno)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split('.')
                    base = base[:len(base) - (child.level - 1)]
                    source = '.'.join(base + ([child.module]
                                              if child.module else []))
                else:
                    source = child.module or ''
                if source.split('.')[0] != 'pyg_hma':
                    continue
                for alias in child.names:  # `from . import sub`: the sub
                    sub = f'{source}.{alias.name}'
                    target = sub if is_module(sub, root) else source
                    yield Import(rel, module, target, local, child.lineno)
            yield from visit(child, inner)

    yield from visit(tree, False)


def all_imports(root: Path = ROOT) -> List[Import]:
    out = []
    for path in sorted((root / 'pyg_hma').rglob('*.py')):
        out += list(_imports_of(path, root))
    return out


def upward(imp: Import, root: Path = ROOT) -> bool:
    return LEVELS[layer(imp.target, root)] > LEVELS[layer(imp.module, root)]


def module_cycles(imports: List[Import]) -> List[List[str]]:
    r"""Cycles of the module-level import graph (an import of
    ``a.b.c`` also runs the packages ``a.b`` and ``a`` unless the importer
    is inside them)."""
    graph: Dict[str, Set[str]] = defaultdict(set)
    for imp in imports:
        if imp.local:
            continue
        parts = imp.target.split('.')
        for n in range(1, len(parts) + 1):
            target = '.'.join(parts[:n])
            if imp.module == target or imp.module.startswith(target + '.'):
                continue  # a package the importer is inside: running
            graph[imp.module].add(target)
    cycles, state = [], {}

    def walk(node: str, stack: List[str]):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return cycles


def violations(root: Path = ROOT
               ) -> Dict[Tuple[str, str, str], List[Import]]:
    found: Dict[Tuple[str, str, str], List[Import]] = defaultdict(list)
    imports = all_imports(root)
    for imp in imports:
        if upward(imp, root):
            found[imp.file, 'upward', imp.target].append(imp)
        if imp.local:
            found[imp.file, 'function-local', imp.target].append(imp)
    for cycle in module_cycles(imports):
        first = cycle[0]
        path = first.replace('pyg_hma.', '', 1).replace('.', '/')
        file = path + ('/__init__.py' if (root / 'pyg_hma' / path).is_dir()
                       else '.py')
        found[file, 'cycle', ' -> '.join(cycle)].append(None)
    return found


def _describe(key, imps) -> str:
    file, kind, target = key
    lines = sorted({i.line for i in imps if i is not None})
    return (f'pyg_hma/{file}' + (f':{",".join(map(str, lines))}'
                                 if lines else '')
            + f': {kind} import of {target}')


def test_imports_never_go_up_and_stay_at_module_level():
    found = violations()
    new = [_describe(k, v) for k, v in sorted(found.items())
           if k not in ALLOWED]
    assert not new, 'layer violations:\n' + '\n'.join(new)


def test_allow_list_is_current():
    # An entry whose file no longer has the violation: remove it.
    found = violations()
    stale = [f'{k}: {why}' for k, why in ALLOWED.items() if k not in found]
    assert not stale, 'remove from ALLOWED:\n' + '\n'.join(stale)


def test_the_study_sits_above_the_runners():
    # The import cycle this layout replaced: the runners read committed
    # rows from the study, the study's sweeps ran the runners. The records
    # now sit below both.
    imports = all_imports()
    assert any(i.module.startswith('pyg_hma.study')
               and i.target.startswith('pyg_hma.runners') for i in imports)
    below = [i for i in imports if layer(i.module) != 'study'
             and layer(i.target) == 'study']
    assert below == []


def test_the_checker_sees_what_it_should(tmp_path):
    # The checker itself, on a small package shaped like this one: an
    # upward import, a function-local one and a cycle.
    pkg = tmp_path / 'pyg_hma'
    for sub in ('nn', 'train', 'study'):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'files.py').write_text('')
    (pkg / 'nn' / 'a.py').write_text('from ..train import b\n')
    (pkg / 'train' / 'b.py').write_text(
        'from ..nn import a\nfrom .. import files\n'
        'def f():\n    from ..study import c\n')
    (pkg / 'study' / 'c.py').write_text('import pyg_hma.train.b\n')
    found = violations(tmp_path)
    kinds = {(k[0], k[1], k[2].split(' -> ')[0]) for k in found}
    assert ('nn/a.py', 'upward', 'pyg_hma.train.b') in kinds
    assert ('train/b.py', 'upward', 'pyg_hma.study.c') in kinds
    assert ('train/b.py', 'function-local', 'pyg_hma.study.c') in kinds
    assert any(k[1] == 'cycle' for k in kinds)
    assert not any(k[2] == 'pyg_hma.files' for k in kinds)


#: The size limits of every module of the package: lines per module, and
#: lines per function or method (its decorators aside).
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 120
#: Functions allowed past :data:`MAX_FUNCTION_LINES`: ``(file relative to
#: the package, qualified name) -> why``.
LONG_FUNCTIONS: Dict[Tuple[str, str], str] = {
    ('runners/cli.py', 'build_parser'):
        'the argparse builder: one add_argument after another',
}


def sizes(root: Path = ROOT) -> Tuple[Dict[str, int], Dict[Tuple[str, str],
                                                           int]]:
    r"""Lines of every module of the package, and of every function in it
    (by qualified name, e.g. ``'HMAReadout.__init__'``)."""
    modules, functions = {}, {}
    for path in sorted((root / 'pyg_hma').rglob('*.py')):
        rel = str(path.relative_to(root / 'pyg_hma'))
        text = path.read_text()
        modules[rel] = len(text.splitlines())

        def visit(node: ast.AST, prefix: str):
            for child in ast.iter_child_nodes(node):
                name = prefix
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                      ast.ClassDef)):
                    name = f'{prefix}{child.name}'
                    if not isinstance(child, ast.ClassDef):
                        functions[rel, name] = (child.end_lineno
                                                - child.lineno + 1)
                    name += '.'
                visit(child, name)

        visit(ast.parse(text, filename=str(path)), '')
    return modules, functions


def test_modules_and_functions_stay_small():
    modules, functions = sizes()
    long_modules = [f'pyg_hma/{f}: {n} lines' for f, n in modules.items()
                    if n > MAX_MODULE_LINES]
    long_functions = [f'pyg_hma/{f}: {name}, {n} lines'
                      for (f, name), n in functions.items()
                      if n > MAX_FUNCTION_LINES
                      and (f, name) not in LONG_FUNCTIONS]
    assert not long_modules and not long_functions, (
        f'modules over {MAX_MODULE_LINES} lines or functions over '
        f'{MAX_FUNCTION_LINES}; split them:\n'
        + '\n'.join(long_modules + long_functions))
    # An allowed function that no longer needs it: remove its entry.
    stale = [k for k in LONG_FUNCTIONS if functions.get(k, 0)
             <= MAX_FUNCTION_LINES]
    assert not stale, f'remove from LONG_FUNCTIONS: {stale}'


def test_the_size_checker_counts_what_it_should(tmp_path):
    pkg = tmp_path / 'pyg_hma'
    pkg.mkdir()
    (pkg / 'a.py').write_text(
        'class A:\n'
        '    def f(self):\n'
        '        return 1\n'
        '\n'
        '\n'
        'def g():\n'
        '    def h():\n'
        '        pass\n'
        '    return h\n')
    modules, functions = sizes(tmp_path)
    assert modules == {'a.py': 9}
    assert functions == {('a.py', 'A.f'): 2, ('a.py', 'g'): 4,
                         ('a.py', 'g.h'): 2}
