r"""OGB molecules ``ogbg-molbace``, ``ogbg-molbbbp`` and ``ogbg-molhiv``.

The datasets are always read by ogb's own :class:`PygGraphPropPredDataset`
and scored by its :class:`Evaluator`. Without an offline mirror, ogb
downloads its zip as usual. With one, :func:`build_ogb_folder` first writes
the dataset folder OGB's zip holds, from the MoleculeNet CSV in the mirror:

.. code-block:: none

    ROOT/ogbg_molhiv/
        RELEASE_v1.txt                      # without it ogb calls input()
        mapping/mol.csv.gz                  # <label>,smiles,mol_id per graph
        mapping/README.md
        raw/{edge,node-feat,edge-feat,num-node-list,num-edge-list,
             graph-label}.csv.gz
        split/scaffold/{train,valid,test}.csv.gz
        processed/geometric_data_processed.pt   # written by ogb itself
        pyg_hma_build.json                  # provenance (not read by ogb)

How OGB made these datasets, and how this module reproduces it:

* **Molecules.** OGB took the molecules of the pretrain-gnns code
  (Hu et al., 2020, ``chem/loader.py``). For BACE and HIV that is every CSV
  row with its SMILES as written; for BBBP it is the 2039 of 2050 rows that
  RDKit parses, each stored as RDKit's *canonical* SMILES
  (``_load_bbbp_dataset`` applies ``MolToSmiles``), so the BBBP mapping holds
  canonical SMILES and the graphs and scaffolds are built from them. The
  canonical SMILES of the current RDKit may differ textually from the 2019
  ones; such a molecule gets the same graph up to the order of its atoms.
  The choice matters for the split too: for 11 BBBP molecules the current
  RDKit keeps or loses the double-bond stereo of the scaffold depending on
  the SMILES text, and scaffolds of the CSV text would swap 4 molecules
  between train and valid.
* **Recovered SMILES.** OGB keeps all 41127 HIV molecules, but the current
  RDKit rejects 7 of them (hypervalent Al, B and Ge atoms that older RDKit
  accepted). They are parsed without the valence check (partial
  sanitization, see :func:`parse_smiles`), and both their graph and their
  scaffold come from that molecule; the graph uses the features of
  ``ogb.utils.features`` like every other. Their atoms and bonds are those
  of the SMILES, but the hydrogen counts, hybridization or aromaticity the
  old RDKit computed around the over-valent atoms cannot be checked
  offline and may differ. Each of the 7 has a scaffold of its own (recorded
  as ``recovered_scaffolds_unique`` in ``pyg_hma_build.json``), so its split
  membership follows from its position alone, whatever its exact scaffold.
* **Graphs.** ``ogb.utils.smiles2graph`` (9 atom and 3 bond features, integer
  category indices). ``raw/edge.csv.gz`` lists every bond once, as
  ``smiles2graph``'s even-numbered edges; ogb's reader
  (``add_inverse_edge=True``) restores the reverse edges in the same
  interleaved order, so the loaded graphs equal ``smiles2graph``'s.
* **Scaffold split.** :func:`scaffold_split` is pretrain-gnns'
  ``splitters.scaffold_split`` (Bemis-Murcko scaffolds with chirality,
  largest scaffold set first, 80/10/10 cut), which is the split OGB ships.
* **mapping/mol.csv.gz.** Columns ``<label>,smiles,mol_id`` as in OGB's
  mapping. ``mol_id`` is the row of the molecule in the MoleculeNet CSV
  (OGB's own ``mol_id`` values are not available offline; ogb never reads
  the column).

Two pitfalls of ogb 1.3.6 on current PyTorch are handled by
:mod:`pyg_hma.data.ogb_read`: ``PygGraphPropPredDataset`` calls ``input()``
when the folder exists without ``RELEASE_v1.txt`` (the builder always
writes it, and a foreign folder without it is reported instead of
hanging), and it calls ``torch.load`` without ``weights_only``, which
defaults to ``True`` since PyTorch 2.6 and rejects PyG's storage classes
(see :func:`~pyg_hma.data.ogb_read.allow_pyg_unpickling`).
PyG's ``pre_transform.pt`` / ``pre_filter.pt`` side files, which PyG reads
with ``weights_only=False``, are deleted before and after ogb opens the
folder (:func:`~pyg_hma.data.cache.remove_pyg_side_files`).
"""
from __future__ import annotations

import json
import os.path as osp
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..loader._pyg_internals import in_memory_data
from ..registry import UnknownNameError
from ..files import PathLike, UnreadableFileError, atomic_path, sha256
from .cache import cache_lock, resolve_root
from .mirror import MissingDataError, find_mirror, mirror_file
from .ogb_read import RELEASE_FILE
from .ogb_read import allow_pyg_unpickling as _allow_pyg_unpickling  # noqa
from .ogb_read import ogb_folder as _folder
from .ogb_read import open_checked as _open_checked
from .ogb_read import open_ogb as _open_ogb
from .registry import DATASETS, DatasetSpec, dataset_spec
from .splits import DatasetSplits

# Bump when the built folder would change; a folder built by another recipe
# is rebuilt (folders downloaded from OGB carry no recipe and are kept).
RECIPE = 'ogb-mol-csv-v1'
BUILD_INFO = 'pyg_hma_build.json'


@dataclass(frozen=True)
class _Spec:
    csv: str  # path inside the mirror
    smiles_col: str
    label_col: str
    # What OGB (through pretrain-gnns) did with SMILES the RDKit rejects:
    # 'drop' the row (BBBP), or 'recover' it because OGB kept every row.
    on_invalid: str
    canonical: bool  # the mapping holds RDKit-canonical SMILES
    num_graphs: int  # OGB's graph count
    split_sizes: Tuple[int, int, int]  # OGB's train/valid/test sizes


_SPECS: Dict[str, _Spec] = {
    'ogbg-molbace': _Spec('moleculenet/bace.csv.gz', 'mol', 'Class',
                          'recover', False, 1513, (1210, 151, 152)),
    'ogbg-molbbbp': _Spec('moleculenet/BBBP.csv.gz', 'smiles', 'p_np', 'drop',
                          True, 2039, (1631, 204, 204)),
    'ogbg-molhiv': _Spec('moleculenet/HIV.csv.gz', 'smiles', 'HIV_active',
                         'recover', False, 41127, (32901, 4113, 4113)),
}

_MAPPING_README = """\
# {name}

## mol.csv.gz

Columns: {label}, smiles, mol_id.

{label} is the task label, smiles the molecule the i-th graph was built from
(the i-th row describes the i-th graph), mol_id the molecule's row in the
MoleculeNet CSV it came from.

Built offline by pyg_hma ({recipe}) from the MoleculeNet CSV, in the layout
of OGB's dataset folder; see pyg_hma_build.json for its provenance.
"""


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise UnknownNameError(f"Unknown OGB molecule dataset '{name}'; "
                               f"choose one of {', '.join(_SPECS)}")
    return _SPECS[name]


# SMILES -> molecule, graph, scaffold ########################################

def parse_smiles(smiles: str, recover: bool = False):
    """Parses a SMILES string with RDKit.

    Args:
        smiles: the SMILES string.
        recover: when RDKit's full sanitization rejects the molecule, parse
            it again without the valence check: the property cache is
            updated leniently, then every other sanitization step a graph
            needs runs (ring perception, Kekulization, aromaticity,
            conjugation, hybridization, radicals).

    Returns:
        ``(mol, recovered)``: the RDKit molecule, or ``None`` when it cannot
        be parsed (at all, or without ``recover``), and whether it needed
        the lenient path.
    """
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is not None or not recover:
        return mol, False
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:  # not even the syntax parses
        return None, False
    flags = Chem.SanitizeFlags
    ops = (flags.SANITIZE_FINDRADICALS | flags.SANITIZE_KEKULIZE
           | flags.SANITIZE_SETAROMATICITY | flags.SANITIZE_SETCONJUGATION
           | flags.SANITIZE_SETHYBRIDIZATION | flags.SANITIZE_SYMMRINGS)
    mol.UpdatePropertyCache(strict=False)
    failed = Chem.SanitizeMol(mol, ops, catchErrors=True)
    if failed != flags.SANITIZE_NONE:
        return None, False
    return mol, True


def mol_to_graph(mol) -> Dict[str, np.ndarray]:
    """``ogb.utils.smiles2graph`` for an RDKit molecule instead of a SMILES.

    Returns the same dictionary (``edge_index``, ``edge_feat``,
    ``node_feat``, ``num_nodes``), built by the same rules, so that a
    molecule parsed by :func:`parse_smiles` with ``recover=True`` gets its
    graph exactly as ``smiles2graph`` would build it.
    """
    from ogb.utils.features import (atom_to_feature_vector,
                                    bond_to_feature_vector)

    x = np.array([atom_to_feature_vector(a) for a in mol.GetAtoms()],
                 dtype=np.int64).reshape(-1, 9)
    edges, feats = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feat = bond_to_feature_vector(bond)
        edges += [(i, j), (j, i)]
        feats += [feat, feat]
    return {
        'edge_index': np.array(edges, dtype=np.int64).reshape(-1, 2).T,
        'edge_feat': np.array(feats, dtype=np.int64).reshape(-1, 3),
        'node_feat': x,
        'num_nodes': len(x),
    }


def murcko_scaffold(mol) -> str:
    """The Bemis-Murcko scaffold SMILES of ``mol``, chirality included.

    Equal to ``MurckoScaffold.MurckoScaffoldSmiles(smiles,
    includeChirality=True)`` as pretrain-gnns calls it (``''`` for a
    molecule without rings). For a molecule that only partial sanitization
    could parse, the scaffold's property cache is updated without the
    valence check that would reject it.
    """
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    try:
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol,
                                                   includeChirality=True)
    except Exception:  # RDKit raises its own valence exceptions here
        scaffold = Chem.MurckoDecompose(mol)
        scaffold.ClearComputedProps()
        scaffold.UpdatePropertyCache(strict=False)
        Chem.GetSymmSSSR(scaffold)
        return Chem.MolToSmiles(scaffold, isomericSmiles=True)


def scaffold_split(
    scaffolds: Sequence[str],
    frac_train: float = 0.8,
    frac_valid: float = 0.1,
) -> Tuple[List[int], List[int], List[int]]:
    """The deterministic scaffold split of pretrain-gnns, used by OGB.

    Molecules are grouped by scaffold; the groups are ordered by size,
    largest first, and groups of equal size by their first index, *highest*
    first (pretrain-gnns sorts by ``(len, first index)`` with
    ``reverse=True``). Walking that order, a group goes to train unless
    train would then exceed ``frac_train`` of all molecules, else to
    validation unless train plus validation would exceed
    ``frac_train + frac_valid``, else to test.

    Args:
        scaffolds: the scaffold of each molecule (see
            :func:`murcko_scaffold`), in dataset order.
        frac_train, frac_valid: the cut fractions; the rest is test.

    Returns:
        ``(train, valid, test)`` lists of positions in ``scaffolds``.
    """
    if not (0 < frac_train and 0 <= frac_valid and
            frac_train + frac_valid <= 1):
        raise ValueError(f'Invalid split fractions: train={frac_train}, '
                         f'valid={frac_valid}')
    groups: Dict[str, List[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)  # indices stay ascending
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]),
                     reverse=True)

    train_cutoff = frac_train * len(scaffolds)
    valid_cutoff = (frac_train + frac_valid) * len(scaffolds)
    train, valid, test = [], [], []
    for group in ordered:
        if len(train) + len(group) > train_cutoff:
            if len(train) + len(valid) + len(group) > valid_cutoff:
                test.extend(group)
            else:
                valid.extend(group)
        else:
            train.extend(group)
    return train, valid, test


# Building the OGB folder ###################################################

def _read_csv(name: str, mirror: Optional[PathLike]):
    import pandas as pd

    spec = _spec(name)
    path = mirror_file(spec.csv, mirror, what=f'MoleculeNet CSV of {name}')
    df = pd.read_csv(path)
    missing = {spec.smiles_col, spec.label_col} - set(df.columns)
    if missing:
        raise ValueError(f"'{path}' lacks the column(s) {sorted(missing)} "
                         f"that {name} is built from (found: "
                         f"{list(df.columns)}).")
    if df[spec.label_col].isna().any():
        raise ValueError(f"'{path}' has missing '{spec.label_col}' labels; "
                         f"{name} is a single task without missing labels.")
    return path, df


def _to_csv_gz(array, path: Path, header: bool = False) -> None:
    import pandas as pd

    frame = array if isinstance(array, pd.DataFrame) else pd.DataFrame(array)
    # mtime=0: the same input gives byte-identical files.
    frame.to_csv(path, header=header, index=False,
                 compression={'method': 'gzip', 'mtime': 0})


@dataclass
class Molecules:
    """The molecules of an OGB dataset, in OGB's order.

    Attributes:
        rows: each molecule's row in the MoleculeNet CSV.
        smiles: the SMILES the mapping stores (canonical for BBBP).
        mols: the RDKit molecules the graphs and scaffolds come from.
        labels: the task labels.
        dropped: CSV rows left out because RDKit rejects their SMILES.
        recovered: CSV rows kept through partial sanitization.
        csv_rows: the number of CSV rows.
        csv_path: the verified CSV file.
    """
    rows: List[int]
    smiles: List[str]
    mols: list
    labels: np.ndarray
    dropped: List[int]
    recovered: List[int]
    csv_rows: int
    csv_path: Path

    def __len__(self) -> int:
        return len(self.rows)

    def scaffolds(self) -> List[str]:
        """The :func:`murcko_scaffold` of each molecule."""
        from rdkit import rdBase

        quiet = rdBase.BlockLogs()  # noqa: F841 (RDKit logs while alive)
        return [murcko_scaffold(mol) for mol in self.mols]

    def graphs(self) -> List[Dict[str, np.ndarray]]:
        """``smiles2graph`` of each molecule (:func:`mol_to_graph` of the
        recovered ones, whose SMILES ``smiles2graph`` cannot parse)."""
        from ogb.utils import smiles2graph
        from rdkit import rdBase

        quiet = rdBase.BlockLogs()  # noqa: F841 (RDKit logs while alive)
        recovered = set(self.recovered)
        return [mol_to_graph(mol) if row in recovered else smiles2graph(s)
                for row, s, mol in zip(self.rows, self.smiles, self.mols)]


def read_molecules(name: str, mirror: Optional[PathLike] = None) -> Molecules:
    """Reads the molecules of ``name`` from the MoleculeNet CSV in the
    mirror, keeping, dropping or recovering rows as OGB did (see the module
    documentation).

    Raises:
        MissingDataError, ChecksumError: the CSV is missing or corrupt.
        ValueError: a SMILES cannot be parsed even with partial
            sanitization where OGB keeps every molecule.
    """
    from rdkit import Chem, rdBase

    spec = _spec(name)
    csv_path, df = _read_csv(name, mirror)
    smiles_in = df[spec.smiles_col].astype(str).tolist()
    recover = spec.on_invalid == 'recover'

    rows, smiles, mols, dropped, recovered = [], [], [], [], []
    # Rejected SMILES are reported in the build info, not logged one by one.
    quiet = rdBase.BlockLogs()  # noqa: F841 (RDKit logs while alive)
    for row, s in enumerate(smiles_in):
        mol, lenient = parse_smiles(s, recover=recover)
        if mol is None:
            if not recover:
                dropped.append(row)
                continue
            raise ValueError(
                f"{name}: row {row} of '{csv_path}' has a SMILES that RDKit "
                f"cannot parse even with partial sanitization: {s!r}")
        if lenient:
            recovered.append(row)
        elif spec.canonical:
            # pretrain-gnns stored MolToSmiles(mol) and OGB built the graph
            # and the scaffold from that string.
            s = Chem.MolToSmiles(mol)
            mol = Chem.MolFromSmiles(s)
        rows.append(row)
        smiles.append(s)
        mols.append(mol)

    labels = df[spec.label_col].to_numpy()[rows].astype(np.int64)
    return Molecules(rows, smiles, mols, labels, dropped, recovered,
                     len(smiles_in), csv_path)


def build_ogb_folder(name: str, root: PathLike,
                     mirror: Optional[PathLike] = None) -> Path:
    """Writes ``root/<ogb dir>`` (e.g. ``root/ogbg_molhiv``) in OGB's format
    from the MoleculeNet CSV in the offline mirror, then lets ogb's
    ``PygGraphPropPredDataset`` process it.

    The folder is assembled and processed under a temporary name and only
    renamed into place when complete, replacing an older folder.

    Args:
        name: ``'ogbg-molbace'``, ``'ogbg-molbbbp'`` or ``'ogbg-molhiv'``.
        root: the ogb root (the folder that holds ``ogbg_mol*/``).
        mirror: the offline mirror (default: :func:`find_mirror`).

    Returns:
        The dataset folder.

    Raises:
        MissingDataError, ChecksumError: the CSV is missing or corrupt.
        ValueError: a SMILES cannot be parsed even with partial
            sanitization where OGB keeps every molecule.
    """
    import pandas as pd
    from rdkit import rdBase

    spec = _spec(name)
    start = time.perf_counter()
    mols = read_molecules(name, mirror)
    scaffolds = mols.scaffolds()
    graphs = mols.graphs()
    train, valid, test = scaffold_split(scaffolds)

    num_nodes = np.array([g['num_nodes'] for g in graphs], dtype=np.int64)
    # Each bond once: smiles2graph emits (i, j), (j, i) pairs; ogb re-adds
    # the reverse edge right after each listed one.
    num_edges = np.array([g['edge_index'].shape[1] // 2 for g in graphs],
                         dtype=np.int64)
    edge = np.concatenate([g['edge_index'][:, 0::2].T for g in graphs])
    edge_feat = np.concatenate([g['edge_feat'][0::2] for g in graphs])
    node_feat = np.concatenate([g['node_feat'] for g in graphs])

    sizes = pd.Series(scaffolds).value_counts()
    position = {row: i for i, row in enumerate(mols.rows)}
    recovered_alone = all(sizes[scaffolds[position[row]]] == 1
                          for row in mols.recovered)

    target = _folder(name, root)
    with atomic_path(target) as tmp:
        for sub in ('mapping', 'raw', 'split/scaffold'):
            (tmp / sub).mkdir(parents=True)
        _to_csv_gz(pd.DataFrame({spec.label_col: mols.labels,
                                 'smiles': mols.smiles, 'mol_id': mols.rows}),
                   tmp / 'mapping' / 'mol.csv.gz', header=True)
        (tmp / 'mapping' / 'README.md').write_text(_MAPPING_README.format(
            name=name, label=spec.label_col, recipe=RECIPE))
        _to_csv_gz(edge, tmp / 'raw' / 'edge.csv.gz')
        _to_csv_gz(node_feat, tmp / 'raw' / 'node-feat.csv.gz')
        _to_csv_gz(edge_feat, tmp / 'raw' / 'edge-feat.csv.gz')
        _to_csv_gz(num_nodes, tmp / 'raw' / 'num-node-list.csv.gz')
        _to_csv_gz(num_edges, tmp / 'raw' / 'num-edge-list.csv.gz')
        _to_csv_gz(mols.labels, tmp / 'raw' / 'graph-label.csv.gz')
        for split, idx in (('train', train), ('valid', valid),
                           ('test', test)):
            _to_csv_gz(np.array(idx, dtype=np.int64),
                       tmp / 'split' / 'scaffold' / f'{split}.csv.gz')
        (tmp / RELEASE_FILE).write_text(
            f'# {name}\n\nVersion 1 of the OGB dataset, rebuilt offline by '
            f'pyg_hma ({RECIPE}) from the MoleculeNet CSV.\n')
        build = {
            'recipe': RECIPE,
            'source': spec.csv,
            'source_sha256': sha256(mols.csv_path),
            'rdkit_version': rdBase.rdkitVersion,
            'csv_rows': mols.csv_rows,
            'num_graphs': len(mols),
            'dropped_rows': mols.dropped,
            'recovered_rows': mols.recovered,
            'recovered_smiles': [mols.smiles[position[row]]
                                 for row in mols.recovered],
            'recovered_scaffolds_unique': recovered_alone,
            'canonical_smiles': spec.canonical,
            'num_scaffolds': int(len(sizes)),
            'split_sizes': [len(train), len(valid), len(test)],
            'build_seconds': round(time.perf_counter() - start, 1),
        }
        (tmp / BUILD_INFO).write_text(json.dumps(build, indent=1) + '\n')
        # Let ogb process inside the temporary folder too, so that an
        # interrupted run leaves neither a raw nor a processed half-folder.
        _open_ogb(name, tmp.parent)
    return target


# Loading it (reading it with ogb: see .ogb_read) ###########################

def _download(name: str, root: Path) -> None:
    """Lets ogb download, unpack and process ``name`` under a temporary
    name that is renamed into ``root`` when complete."""
    url = _ogb_url(name)
    try:
        with atomic_path(_folder(name, root)) as tmp:
            _open_ogb(name, tmp.parent)
    except OSError as e:  # urllib's URLError is an OSError
        raise MissingDataError(
            f"Could not download {name} from {url} ({e}). Offline, point "
            f"$PYG_HMA_MIRROR (or mirror=) at a mirror holding "
            f"'{_spec(name).csv}' to build it from the MoleculeNet CSV.") \
            from e


def _read_build_info(folder: Path) -> Optional[dict]:
    path = folder / BUILD_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def load_ogb_mol(name: str, root: Optional[PathLike] = None,
                 mirror: Optional[PathLike] = None, seed: int = 0,
                 **kwargs) -> DatasetSplits:
    """Loads an OGB molecule dataset with its scaffold split.

    The dataset is ogb's ``PygGraphPropPredDataset(name, root=root)`` and
    the splits its ``get_idx_split()``. When ``root`` holds no folder for
    ``name`` yet, it is built from the MoleculeNet CSV of the offline mirror
    (:func:`build_ogb_folder`), or, without a mirror, downloaded by ogb.

    Args:
        name: ``'ogbg-molbace'``, ``'ogbg-molbbbp'`` or ``'ogbg-molhiv'``.
        root: the ogb root; ``root/ogbg_molbace/`` etc. live directly in it
            (default: ``$PYG_HMA_ROOT`` or ``~/.cache/pyg_hma``).
        mirror: the offline mirror (default: :func:`find_mirror`).
        seed: unused: the scaffold split is deterministic.

    Returns:
        :class:`DatasetSplits` whose samples are ogb's ``Data`` objects
        (``x``: 9 integer atom features, ``edge_attr``: 3 integer bond
        features, ``y``: ``[1, 1]`` long label), metric ``'rocauc'``; the
        engine scores with ``ogb.graphproppred.Evaluator(info['evaluator'])``.
    """
    if kwargs:
        raise TypeError(f'load_ogb_mol() got unexpected arguments: '
                        f'{sorted(kwargs)}')
    registered = dataset_spec(name, load_ogb_mol,
                              'OGB molecule dataset')
    spec = _spec(name)
    root = resolve_root(root)
    folder = _folder(name, root)

    def fetch() -> str:
        if find_mirror(mirror) is not None:
            build_ogb_folder(name, root, mirror)
            return f'mirror: {spec.csv}'
        _download(name, root)
        return f'download: {_ogb_url(name)}'

    # One process builds the folder; the others wait and read it.
    with cache_lock(folder):
        built = _read_build_info(folder)
        stale = built is not None and built.get('recipe') != RECIPE
        if stale or not (folder.is_dir() or Path(f'{folder}_pyg').is_dir()):
            source = fetch()
        else:
            source = None
        built = _read_build_info(folder)
        try:
            dataset, split = _open_checked(name, root, built)
        except UnreadableFileError as e:
            if source is not None or built is None:
                raise  # just built, or not ours to replace: one line
            # A folder built here from the mirror: build it again, once.
            warnings.warn(f"Rebuilding the OGB folder '{folder}': "
                          f"{e.reason}.")
            source = fetch()
            built = _read_build_info(folder)
            try:
                dataset, split = _open_checked(name, root, built)
            except UnreadableFileError as again:
                raise UnreadableFileError(
                    f"The OGB folder '{folder}' was rebuilt but still cannot "
                    f"be read ({again.reason}); check the disk and the "
                    f"cache root.") from None
    if source is None:
        source = (f"cache built from mirror: {built['source']}" if built
                  else f'cache: {folder}')

    sizes = tuple(len(split[k]) for k in ('train', 'valid', 'test'))
    if len(dataset) != spec.num_graphs or sizes != spec.split_sizes:
        warnings.warn(
            f'{name}: {len(dataset)} graphs split {sizes}, but OGB has '
            f'{spec.num_graphs} split {spec.split_sizes}. The RDKit version '
            f'may parse or canonicalize the SMILES differently.')

    data = in_memory_data(dataset)
    num_graphs = len(dataset)
    y = data.y.view(-1)
    info = {
        'source': source,
        'ogb_folder': str(folder),
        'evaluator': name,
        'eval_metric': dataset.eval_metric,
        'task_type': dataset.task_type,
        'num_tasks': dataset.num_tasks,
        'num_graphs': num_graphs,
        'avg_nodes': round(data.num_nodes / num_graphs, 1),
        # OGB counts bonds; edge_index holds both directions of each.
        'avg_edges': round(data.edge_index.size(1) / 2 / num_graphs, 1),
        'positive_rate': round(float(y.float().mean()), 4),
        'split': 'scaffold',
        'matches_ogb_sizes': (num_graphs == spec.num_graphs
                              and sizes == spec.split_sizes),
        'ogb_sizes': {'graphs': spec.num_graphs,
                      'splits': list(spec.split_sizes)},
    }
    if built is not None:
        info.update({
            'recipe': built['recipe'],
            'rdkit_version': built['rdkit_version'],
            'csv_rows': built['csv_rows'],
            'dropped_smiles': len(built['dropped_rows']),
            'recovered_smiles': len(built['recovered_rows']),
            'recovered_rows': built['recovered_rows'],
        })

    return DatasetSplits(
        name=name,
        train=dataset[split['train']],
        val=dataset[split['valid']],
        test=dataset[split['test']],
        num_features=data.x.size(1),
        num_classes=dataset.num_classes,
        metric=registered.metric,
        task=registered.task,
        num_edge_features=data.edge_attr.size(1),
        info=info,
    )


for _name in _SPECS:
    DATASETS.register(DatasetSpec(_name, load_ogb_mol, metric='rocauc',
                                  table=3))


def _ogb_url(name: str) -> str:
    import pandas as pd
    import ogb.graphproppred

    master = pd.read_csv(osp.join(osp.dirname(ogb.graphproppred.__file__),
                                  'master.csv'), index_col=0,
                         keep_default_na=False)
    return master[name]['url']
