"""The bare install: the wheel, installed with ``--no-deps`` into a fresh
virtual environment that sees only torch, torch-geometric and numpy (and
what they themselves require) from this environment, trains the README's
example from a folder outside the checkout; without the ``benchmarks``
extra the runners say in one line which extra to install."""
import importlib.metadata as metadata
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: ``pip install pyg_hma`` brings these (pyproject.toml's dependencies).
BARE = ('torch', 'torch-geometric', 'numpy')

#: The benchmarks extra's modules that torch and PyG do not bring along
#: (PyG itself requires tqdm).
EXTRA_ONLY = ('ogb', 'rdkit', 'sklearn', 'scipy', 'pandas', 'matplotlib',
              'optuna', 'ray', 'tensorboard', 'spacy')

HINT = ("pyg_hma: the runners need the benchmarks extra: "
        "pip install 'pyg_hma[benchmarks]'")

# In the bare environment, in one process (each start imports torch): the
# public classes, the README's example, the model factory, and the command
# lines that need no extra.
CHECKS = textwrap.dedent('''
    import contextlib, importlib.util, io, runpy, sys
    site, example, extra_only = sys.argv[1], sys.argv[2], sys.argv[3:]
    leaked = [m for m in extra_only if importlib.util.find_spec(m)]
    assert not leaked, f'not a bare environment: {leaked} importable'

    import torch, pyg_hma
    from pyg_hma import HMAClassifier, HMAReadout, MomentumEncoder
    assert pyg_hma.__file__.startswith(site), pyg_hma.__file__

    # The README's example, as written there.
    with open(example) as f:
        exec(compile(f.read(), 'README.md', 'exec'), {'__name__': '__main__'})

    # The runners' model factory: one training step with HMA.
    from torch_geometric.data import Batch, Data
    from pyg_hma.models import build_model
    torch.manual_seed(0)
    graphs = [Data(x=torch.randn(4, 3), y=torch.tensor([i % 2]),
                   edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]))
              for i in range(8)]
    batch = Batch.from_data_list(graphs)
    model = build_model('gcn', 'hma', num_classes=2, num_features=3,
                        backbone_kwargs=dict(hidden_channels=8, num_layers=2),
                        hma_kwargs=dict(memory_size=8, slots_per_class=2,
                                        label_dim=8))
    opt = torch.optim.Adam(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(batch, y=batch.y), batch.y)
    loss.backward()
    opt.step()
    assert isinstance(model.readout, HMAReadout)
    assert int((model.readout.queue_labels >= 0).sum()) == 8
    print('trained one step, loss', float(loss))

    def command(module, *args, code=0):
        out, err = io.StringIO(), io.StringIO()
        sys.argv = [module, *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_module(module, run_name='__main__',
                                 alter_sys=True)
            except SystemExit as e:
                assert (e.code or 0) == code, (module, args, e.code,
                                               err.getvalue())
        return out.getvalue() + err.getvalue()

    listed = command('pyg_hma.data', 'list')
    # OGB's molecules need the extra: one line, exit 2, before any work.
    said = command('pyg_hma.data', 'prepare', '--dataset', 'ogbg-molbace',
                   '--root', site + '/no-cache', code=2)
    assert said.strip().splitlines() == [
        "pyg_hma: the datasets need the benchmarks extra: "
        "pip install 'pyg_hma[benchmarks]'"], said
    assert 'NCI1' in listed.split() and 'ogbg-molhiv' in listed, listed
    # No mirror is found from outside a checkout: the usual download (or
    # --mirror) is what a real user gets, never a path derived from the
    # installed package.
    from pyg_hma.data import find_mirror
    assert find_mirror() is None, find_mirror()
    # The runners' protocols are package data: the wheel runs them without
    # a checkout's benchmarks/ folder; --help works without the extra.
    helped = command('pyg_hma.runners.protocols.ood', '--help')
    assert 'NCI1' in helped and "CIGA's scripts" in helped, helped
    from pyg_hma.runners.protocols import runner_protocols
    names = sorted(runner_protocols())
    assert 'ogbg-molhiv' in names and 'IMDB-BINARY' in names, names
    print('bare checks passed')
''')


def _key(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def bare_distributions(roots=BARE):
    r"""The installed distributions :obj:`roots` need, with what they
    require (their extras left out), transitively."""
    from packaging.requirements import Requirement
    seen, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if _key(name) in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional platform dependency not installed here
        seen[_key(name)] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return seen


def link_distributions(dists, dest: Path) -> None:
    r"""A folder of links to the top-level modules and metadata of
    :obj:`dists` only: on ``sys.path`` it shows those packages and nothing
    else of this environment's site-packages."""
    dest.mkdir()
    for dist in dists.values():
        for top in {f.parts[0] for f in dist.files or ()}:
            if top in ('..', '__pycache__') or top.endswith('.pth') or \
                    top.startswith('__editable__'):
                continue
            src = Path(dist.locate_file(top))
            if src.exists() and not (dest / top).exists():
                (dest / top).symlink_to(src)


def readme_example() -> str:
    r"""The README's first Python block: the quick start."""
    text = (ROOT / 'README.md').read_text()
    match = re.search(r'```python\n(.*?)```', text, re.S)
    assert match, 'README.md has no ```python block'
    return match.group(1)


def _offline_build_or_skip():
    missing = [m for m in ('setuptools', 'packaging', 'venv')
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f'cannot build the wheel offline: {", ".join(missing)} '
                    f'not installed here (the build runs without build '
                    f'isolation, from this environment)')
    for name in BARE:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.skip(f'{name} is not installed here')


@pytest.mark.skipif(sys.platform == 'win32', reason='POSIX paths, symlinks')
def test_bare_wheel_trains_the_readme_example(tmp_path):
    _offline_build_or_skip()
    wheels = tmp_path / 'wheels'
    build = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
         '--no-build-isolation', '--no-index', '-q', '-w', str(wheels),
         str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel, = wheels.glob('pyg_hma-*.whl')

    env_dir = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(env_dir)], check=True)
    python = env_dir / 'bin' / 'python'
    site = Path(subprocess.run(
        [str(python), '-c', 'import sysconfig; '
         'print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip())
    # torch, PyG and numpy (with what they require) come from this
    # environment through a .pth line to a folder of links to them alone:
    # the extras installed here (ogb, scipy, ...) and this checkout's
    # editable install stay invisible.
    deps = tmp_path / 'deps'
    link_distributions(bare_distributions(), deps)
    (site / 'deps.pth').write_text(f'{deps}\n')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps',
                    '--no-index', '-q', '--target', str(site), str(wheel)],
                   check=True, capture_output=True)

    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    example = tmp_path / 'readme_example.py'
    example.write_text(readme_example())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('PYG_HMA_') and k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    run = dict(cwd=outside, env=env, capture_output=True, text=True,
               timeout=300)
    res = subprocess.run([str(python), '-c', CHECKS, str(site), str(example),
                          *EXTRA_ONLY], **run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'accuracy' in res.stdout and 'bare checks passed' in res.stdout

    # A runner without the extra: one line naming it, exit status 2, before
    # any work (no output folder).
    out = tmp_path / 'out'
    res = subprocess.run([str(python), '-m',
                          'pyg_hma.runners.protocols.ogb_mol', '--dataset',
                          'ogbg-molbace', '--quick', '--out', str(out),
                          '--root', str(tmp_path / 'data')], **run)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines()
             if not line.startswith('<frozen runpy>')]
    assert lines == [HINT], res.stderr
    assert not out.exists()


def test_missing_extra_is_one_line(capsys):
    r"""The import of a module of the benchmarks extra that is not installed
    becomes the one line and exit status 2; other import errors stay."""
    from pyg_hma.extras import EXTRAS, needs_extra, require
    assert EXTRAS['benchmarks'] == ('ogb', 'rdkit', 'sklearn', 'scipy',
                                    'pandas', 'tqdm', 'matplotlib')
    with pytest.raises(SystemExit) as exc:
        with needs_extra('benchmarks'):
            raise ModuleNotFoundError("No module named 'rdkit'",
                                      name='rdkit.Chem')
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == HINT
    with pytest.raises(ModuleNotFoundError):
        with needs_extra('benchmarks'):
            raise ModuleNotFoundError("No module named 'nope'", name='nope')
    require('benchmarks')  # installed here: returns


def test_extras_match_pyproject():
    r"""pyproject.toml's dependencies are the bare three, the benchmarks
    extra is what :data:`pyg_hma.extras.EXTRAS` names, and the test extra
    installs every extra (``make test`` needs them all) and Sphinx."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        pytest.skip('tomllib needs Python 3.11')
    from pyg_hma.extras import EXTRAS
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    names = [re.split(r'[<>=!~ ;\[]', d)[0] for d in project['dependencies']]
    assert names == list(BARE)
    extras = project['optional-dependencies']
    pip_names = {'sklearn': 'scikit-learn'}
    assert [re.split(r'[<>=!~ ;\[]', d)[0] for d in extras['benchmarks']] \
        == [pip_names.get(m, m) for m in EXTRAS['benchmarks']]
    test = ' '.join(extras['test'])
    for extra in ('benchmarks', 'text', 'sweep', 'tensorboard', 'ray'):
        assert f'pyg_hma[{extra}]' in test, extra
    assert 'sphinx' in test
