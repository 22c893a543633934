"""OGB molecules rebuilt from the MoleculeNet CSVs (pyg_hma.data.ogb_mol).

The scaffold-split tests use hand-made inputs whose expected split is worked
out in the comments. The mirror tests build ogbg-molbace once per module
(ogbg-molhiv is far too slow for CI) and read it back with ogb's own loader;
tiny fake mirrors cover recovery, rebuilds and interrupted builds.
"""
import builtins
import gzip
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pyg_hma.data import MissingDataError, find_mirror
from pyg_hma.data import ogb_mol
from pyg_hma.data.ogb_mol import (load_ogb_mol, mol_to_graph, murcko_scaffold,
                                  parse_smiles, read_molecules,
                                  scaffold_split)

Chem = pytest.importorskip('rdkit.Chem')
smiles2graph = pytest.importorskip('ogb.utils').smiles2graph

MIRROR = find_mirror()
needs_mirror = pytest.mark.skipif(
    MIRROR is None, reason='no offline mirror (../shared/data or '
    '$PYG_HMA_MIRROR) to build the OGB folders from')

AL_OXALATE = 'O=C1O[Al]23(OC1=O)(OC(=O)C(=O)O2)OC(=O)C(=O)O3'  # HIV row 137


def _scaffold(smiles):
    return murcko_scaffold(Chem.MolFromSmiles(smiles))


# Scaffolds and the split ####################################################

def test_murcko_scaffold_groups_ring_systems():
    benzene = 'c1ccccc1'
    assert _scaffold('Cc1ccccc1') == benzene
    assert _scaffold('Oc1ccccc1') == benzene
    assert _scaffold('NCCc1ccccc1') == benzene
    # Side chains go, linkers between rings stay.
    assert _scaffold('CCc1ccc(Cc2ccncc2)cc1') == \
        _scaffold('c1ccc(Cc2ccncc2)cc1')
    # No ring, no scaffold.
    assert _scaffold('CCO') == ''
    assert _scaffold('CC(=O)O') == ''


def test_murcko_scaffold_keeps_chirality():
    # cis / trans 1,3-diphenylcyclohexane with a methyl side chain.
    trans = _scaffold('Cc1ccc(cc1)[C@@H]1CCC[C@H](c2ccccc2)C1')
    cis = _scaffold('Cc1ccc(cc1)[C@@H]1CCC[C@@H](c2ccccc2)C1')
    assert '@' in trans and '@' in cis
    assert trans != cis
    assert trans == _scaffold('c1ccc(cc1)[C@@H]1CCC[C@H](c2ccccc2)C1')


def test_scaffold_split_on_known_smiles():
    smiles = ['Cc1ccccc1', 'CCO', 'Oc1ccccc1', 'C1CCCCC1', 'CCN',
              'Nc1ccccc1', 'C1CCNCC1', 'CC(C)O', 'c1ccc2ccccc2c1', 'CCCC']
    # Groups: '' = {1, 4, 7, 9}, benzene = {0, 2, 5}, and the singletons
    # cyclohexane {3}, piperidine {6}, naphthalene {8}. Order: '' (4),
    # benzene (3), then singletons by *highest* first index: 8, 6, 3.
    # Cut-offs 8 and 9 of 10: '' -> train (4), benzene -> train (7),
    # 8 -> train (8, not > 8), 6 -> valid (9), 3 -> test.
    train, valid, test = scaffold_split([_scaffold(s) for s in smiles])
    assert train == [1, 4, 7, 9, 0, 2, 5, 8]
    assert valid == [6]
    assert test == [3]


def test_scaffold_split_tie_order_is_pretrain_gnns():
    # a = {0, 3, 6}, b = {1, 4}, c = {2, 5}, d, e, f = {7}, {8}, {9}.
    # Equal sizes are ordered by first index descending (reverse=True on
    # (size, first index)): a, c, b, f, e, d. Cut-offs 8 and 9.
    train, valid, test = scaffold_split(list('abcabcadef'))
    assert train == [0, 3, 6, 2, 5, 1, 4, 9]
    assert valid == [8]
    assert test == [7]


def test_scaffold_split_group_that_overflows_train_is_skipped():
    # Sizes 5, 4, 1 of 10: the 4-group would take train to 9 > 8, so it goes
    # to valid (5 + 0 + 4 = 9 <= 9); the later singleton still fits train.
    scaffolds = ['a'] * 5 + ['b'] * 4 + ['c']
    train, valid, test = scaffold_split(scaffolds)
    assert train == [0, 1, 2, 3, 4, 9]
    assert valid == [5, 6, 7, 8]
    assert test == []


def test_scaffold_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match='fractions'):
        scaffold_split(['a', 'b'], frac_train=0.9, frac_valid=0.2)


# Graphs #####################################################################

@pytest.mark.parametrize('smiles', [
    'C', '[Na+].[Cl-]', 'Cl/C=C/Cl', 'C[C@H](N)C(=O)O', 'Oc1ccccc1',
    'O=[N+]([O-])c1ccccc1', 'C#N', '[2H]C([2H])[2H]',
])
def test_mol_to_graph_equals_smiles2graph(smiles):
    expected = smiles2graph(smiles)
    graph = mol_to_graph(Chem.MolFromSmiles(smiles))
    assert graph['num_nodes'] == expected['num_nodes']
    for key in ('node_feat', 'edge_index', 'edge_feat'):
        assert graph[key].dtype == expected[key].dtype
        np.testing.assert_array_equal(graph[key], expected[key])


def test_parse_smiles_recovers_hypervalent_aluminium():
    assert parse_smiles(AL_OXALATE) == (None, False)
    mol, recovered = parse_smiles(AL_OXALATE, recover=True)
    assert recovered
    # Al with three oxalates: 19 atoms, 18 + 3 ring closures = 21 bonds.
    assert (mol.GetNumAtoms(), mol.GetNumBonds()) == (19, 21)
    graph = mol_to_graph(mol)
    assert graph['edge_index'].shape == (2, 42)
    al = graph['node_feat'][3]
    # atomic number 13 -> index 12, degree 6, formal charge 0 -> index 5,
    # in a ring.
    assert [al[0], al[2], al[3], al[8]] == [12, 6, 5, 1]
    assert murcko_scaffold(mol) != ''
    # A SMILES that is not even syntactically valid stays unparsable.
    assert parse_smiles('C1CC(', recover=True) == (None, False)


# Fake mirrors ###############################################################

def _fake_mirror(tmp_path, smiles, labels):
    mirror = tmp_path / 'mirror'
    (mirror / 'moleculenet').mkdir(parents=True)
    pd.DataFrame({'smiles': smiles, 'activity': 'CI', 'HIV_active': labels}
                 ).to_csv(mirror / 'moleculenet' / 'HIV.csv.gz', index=False)
    digest = ogb_mol.sha256(mirror / 'moleculenet' / 'HIV.csv.gz')
    (mirror / 'SHA256SUMS').write_text(f'{digest}  ./moleculenet/HIV.csv.gz\n')
    return mirror


TINY_HIV = ['CCO', 'c1ccccc1O', AL_OXALATE, 'Cc1ccccc1', 'C1CCNCC1', 'CCN']


def test_hiv_rows_rejected_by_rdkit_are_recovered(tmp_path):
    mirror = _fake_mirror(tmp_path, TINY_HIV, [0, 1, 0, 0, 1, 0])
    with pytest.warns(UserWarning, match='OGB has 41127'):
        splits = load_ogb_mol('ogbg-molhiv', root=tmp_path / 'root',
                              mirror=mirror)
    assert splits.info['recovered_smiles'] == 1
    assert splits.info['recovered_rows'] == [2]
    assert splits.info['dropped_smiles'] == 0
    assert sum(splits.sizes().values()) == 6

    from ogb.graphproppred import PygGraphPropPredDataset
    with ogb_mol._allow_pyg_unpickling():
        dataset = PygGraphPropPredDataset('ogbg-molhiv',
                                          root=str(tmp_path / 'root'))
    expected = mol_to_graph(parse_smiles(AL_OXALATE, recover=True)[0])
    assert torch.equal(dataset[2].x, torch.from_numpy(expected['node_feat']))
    assert torch.equal(dataset[2].edge_index,
                       torch.from_numpy(expected['edge_index']))
    assert dataset[1].y.item() == 1


def test_interrupted_build_leaves_no_folder(tmp_path, monkeypatch):
    mirror = _fake_mirror(tmp_path, TINY_HIV, [0] * 6)
    root = tmp_path / 'root'

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ogb_mol, '_open_ogb', interrupt)
    with pytest.raises(KeyboardInterrupt):
        ogb_mol.build_ogb_folder('ogbg-molhiv', root, mirror)
    assert list(root.iterdir()) == []


def test_folder_of_another_recipe_is_rebuilt(tmp_path):
    mirror = _fake_mirror(tmp_path, TINY_HIV, [0] * 6)
    folder = tmp_path / 'root' / 'ogbg_molhiv'
    folder.mkdir(parents=True)
    (folder / 'RELEASE_v1.txt').write_text('old\n')
    (folder / ogb_mol.BUILD_INFO).write_text(json.dumps({'recipe': 'old'}))
    with pytest.warns(UserWarning):
        splits = load_ogb_mol('ogbg-molhiv', root=tmp_path / 'root',
                              mirror=mirror)
    build = json.loads((folder / ogb_mol.BUILD_INFO).read_text())
    assert build['recipe'] == ogb_mol.RECIPE
    assert splits.info['source'] == 'mirror: moleculenet/HIV.csv.gz'


def test_foreign_folder_without_release_file_errors_instead_of_prompting(
        tmp_path, monkeypatch):
    folder = tmp_path / 'ogbg_molbace' / 'raw'
    folder.mkdir(parents=True)

    def no_prompt(*args):
        raise AssertionError('ogb asked on stdin')

    monkeypatch.setattr(builtins, 'input', no_prompt)
    with pytest.raises(RuntimeError, match='RELEASE_v1.txt'):
        load_ogb_mol('ogbg-molbace', root=tmp_path, mirror=tmp_path)


def _fake_ogb_zip(tmp_path):
    """An ogb-style ``hiv.zip`` (folder ``hiv/``) of the tiny HIV set."""
    import shutil

    mirror = _fake_mirror(tmp_path, TINY_HIV, [0, 1, 0, 0, 1, 0])
    folder = ogb_mol.build_ogb_folder('ogbg-molhiv', tmp_path / 'built',
                                      mirror)
    shutil.rmtree(folder / 'processed')
    (folder / ogb_mol.BUILD_INFO).unlink()
    staging = tmp_path / 'staging'
    shutil.copytree(folder, staging / 'hiv')
    return shutil.make_archive(str(tmp_path / 'hiv'), 'zip', staging)


def test_without_mirror_ogb_downloads(tmp_path, monkeypatch):
    import shutil
    from ogb.graphproppred import dataset_pyg

    archive = _fake_ogb_zip(tmp_path)
    urls = []

    def fake_download(url, folder, log=True):
        urls.append(url)
        return shutil.copy(archive, folder)

    monkeypatch.setattr(ogb_mol, 'find_mirror', lambda mirror=None: None)
    monkeypatch.setattr(dataset_pyg, 'decide_download', lambda url: True)
    monkeypatch.setattr(dataset_pyg, 'download_url', fake_download)
    root = tmp_path / 'root'
    with pytest.warns(UserWarning, match='OGB has 41127'):
        splits = load_ogb_mol('ogbg-molhiv', root=root)
    assert urls == [ogb_mol._ogb_url('ogbg-molhiv')]
    assert urls[0].endswith('/hiv.zip')
    assert splits.info['source'] == f'download: {urls[0]}'
    assert sum(splits.sizes().values()) == 6
    assert sorted(p.name for p in root.iterdir()) == ['ogbg_molhiv']


def test_failed_download_names_the_mirror(tmp_path, monkeypatch):
    import urllib.error
    from ogb.graphproppred import dataset_pyg

    def offline(url):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(ogb_mol, 'find_mirror', lambda mirror=None: None)
    monkeypatch.setattr(dataset_pyg, 'decide_download', offline)
    with pytest.raises(MissingDataError, match='PYG_HMA_MIRROR'):
        load_ogb_mol('ogbg-molbbbp', root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    with pytest.raises(ValueError, match='ogbg-molhiv'):
        load_ogb_mol('ogbg-moltox21')
    with pytest.raises(TypeError, match='batch_size'):
        load_ogb_mol('ogbg-molbace', batch_size=32)


# The real molbace, built from the mirror ####################################

def _pretrain_gnns_split(smiles_list):
    """pretrain-gnns' ``splitters.scaffold_split``, transcribed as a
    reference (deterministic, 80/10/10, chirality included)."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    all_scaffolds = {}
    for i, smiles in enumerate(smiles_list):
        scaffold = MurckoScaffold.MurckoScaffoldSmiles(
            smiles=smiles, includeChirality=True)
        if scaffold not in all_scaffolds:
            all_scaffolds[scaffold] = [i]
        else:
            all_scaffolds[scaffold].append(i)
    all_scaffolds = {key: sorted(value)
                     for key, value in all_scaffolds.items()}
    all_scaffold_sets = [
        scaffold_set for (scaffold, scaffold_set) in sorted(
            all_scaffolds.items(), key=lambda x: (len(x[1]), x[1][0]),
            reverse=True)
    ]
    train_cutoff = 0.8 * len(smiles_list)
    valid_cutoff = 0.9 * len(smiles_list)
    train_idx, valid_idx, test_idx = [], [], []
    for scaffold_set in all_scaffold_sets:
        if len(train_idx) + len(scaffold_set) > train_cutoff:
            if len(train_idx) + len(valid_idx) + len(scaffold_set) > \
                    valid_cutoff:
                test_idx.extend(scaffold_set)
            else:
                valid_idx.extend(scaffold_set)
        else:
            train_idx.extend(scaffold_set)
    return train_idx, valid_idx, test_idx


@pytest.fixture(scope='module')
def bace(tmp_path_factory):
    if MIRROR is None:
        pytest.skip('no offline mirror')
    root = tmp_path_factory.mktemp('ogb')
    splits = load_ogb_mol('ogbg-molbace', root=root)
    csv = pd.read_csv(MIRROR / 'moleculenet' / 'bace.csv.gz')
    return root, splits, csv


@needs_mirror
def test_bace_folder_has_ogb_layout(bace):
    root, _, _ = bace
    folder = root / 'ogbg_molbace'
    for rel in ['RELEASE_v1.txt', 'mapping/mol.csv.gz',
                'raw/edge.csv.gz', 'raw/node-feat.csv.gz',
                'raw/edge-feat.csv.gz', 'raw/num-node-list.csv.gz',
                'raw/num-edge-list.csv.gz', 'raw/graph-label.csv.gz',
                'split/scaffold/train.csv.gz', 'split/scaffold/valid.csv.gz',
                'split/scaffold/test.csv.gz',
                'processed/geometric_data_processed.pt']:
        assert (folder / rel).is_file(), rel
    # Nothing was left beside it.
    assert sorted(p.name for p in root.iterdir()) == ['ogbg_molbace']
    with gzip.open(folder / 'raw' / 'num-node-list.csv.gz', 'rt') as f:
        assert len(f.read().split()) == 1513


@needs_mirror
def test_bace_read_back_by_ogb(bace):
    from ogb.graphproppred import PygGraphPropPredDataset

    root, _, csv = bace
    with ogb_mol._allow_pyg_unpickling():
        dataset = PygGraphPropPredDataset('ogbg-molbace', root=str(root))
    assert len(dataset) == 1513
    split = dataset.get_idx_split()
    assert [len(split[k]) for k in ('train', 'valid', 'test')] == \
        [1210, 151, 152]
    everything = torch.cat([split['train'], split['valid'], split['test']])
    assert sorted(everything.tolist()) == list(range(1513))

    # Each graph is smiles2graph of the CSV row, in CSV order.
    for i in [0, 1, 700, 1512]:
        expected = smiles2graph(csv['mol'][i])
        data = dataset[i]
        assert torch.equal(data.x, torch.from_numpy(expected['node_feat']))
        assert torch.equal(data.edge_index,
                           torch.from_numpy(expected['edge_index']))
        assert torch.equal(data.edge_attr,
                           torch.from_numpy(expected['edge_feat']))
        assert data.y.tolist() == [[int(csv['Class'][i])]]


@needs_mirror
def test_bace_mapping_keeps_csv_order(bace):
    root, _, csv = bace
    mapping = pd.read_csv(root / 'ogbg_molbace' / 'mapping' / 'mol.csv.gz')
    assert list(mapping.columns) == ['Class', 'smiles', 'mol_id']

    def digest(values):
        return hashlib.sha256('\n'.join(map(str, values)).encode()).hexdigest()

    assert digest(mapping['smiles']) == digest(csv['mol'])
    assert digest(mapping['Class']) == digest(csv['Class'])


@needs_mirror
def test_bace_split_is_pretrain_gnns_index_for_index(bace):
    root, _, csv = bace
    expected = _pretrain_gnns_split(csv['mol'].tolist())
    for name, idx in zip(('train', 'valid', 'test'), expected):
        path = root / 'ogbg_molbace' / 'split' / 'scaffold' / f'{name}.csv.gz'
        written = pd.read_csv(path, header=None)[0].tolist()
        assert written == idx, name


@needs_mirror
def test_bace_dataset_splits(bace):
    from ogb.graphproppred import Evaluator

    root, splits, _ = bace
    assert splits.sizes() == {'train': 1210, 'val': 151, 'test': 152}
    assert (splits.num_features, splits.num_edge_features) == (9, 3)
    assert (splits.num_classes, splits.metric) == (2, 'rocauc')
    info = splits.info
    assert info['num_tasks'] == 1 and info['matches_ogb_sizes']
    assert info['dropped_smiles'] == 0 and info['recovered_smiles'] == 0
    # The evaluator named in info scores the test labels.
    y = torch.cat([data.y for data in splits.test])
    result = Evaluator(info['evaluator']).eval(
        {'y_true': y, 'y_pred': y.float()})
    assert result['rocauc'] == 1.0


@needs_mirror
def test_cached_folder_is_reused_by_prepare(bace, capsys):
    from pyg_hma.data.__main__ import main

    root, _, _ = bace
    build = root / 'ogbg_molbace' / ogb_mol.BUILD_INFO
    before = build.stat().st_mtime_ns
    assert main(['prepare', '--dataset', 'ogbg-molbace', '--root',
                 str(root), '--json']) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report['splits'] == {'train': 1210, 'val': 151, 'test': 152}
    assert report['source'].startswith('cache')
    assert build.stat().st_mtime_ns == before


@needs_mirror
def test_bbbp_keeps_2039_molecules_and_ogb_split_sizes():
    molecules = read_molecules('ogbg-molbbbp')
    assert molecules.csv_rows == 2050
    assert len(molecules) == 2039
    assert len(molecules.dropped) == 11
    assert not set(molecules.dropped) & set(molecules.rows)
    assert molecules.rows == sorted(molecules.rows)  # CSV order kept
    sizes = [len(s) for s in scaffold_split(molecules.scaffolds())]
    assert sizes == [1631, 204, 204]
