r"""TU Dortmund graph classification benchmarks and their two protocols.

**Size shift** (``NCI1``, ``NCI109``, ``PROTEINS``, ``DD``), the protocol of
Yehudai et al. (2021) used by size-invariant GNNs (Bevilacqua et al., 2021)
and CIGA (Chen et al., 2022). Their index files were published as a download
that the project's offline machines cannot reach, so the split is derived
here from the rule they state:

* the node counts :math:`n_i` of *all* graphs give two thresholds
  ``p50 = numpy.percentile(n, 50)`` and ``p90 = numpy.percentile(n, 90)``
  (numpy's default ``'linear'`` interpolation, so a threshold may fall
  between two integers);
* the training pool holds every graph with :math:`n_i \le` ``p50``, the test
  split every graph with :math:`n_i \ge` ``p90``. Ties at a threshold are
  *included*, so the pool may hold slightly more than half of the graphs;
* a seeded 10% of the pool (``int(0.1 * |pool|)`` graphs, rounded down) is the
  validation split, the rest the training split;
* node features are the one-hot TU node labels, as PyG's
  :class:`~torch_geometric.datasets.TUDataset` builds them with its default
  ``use_node_attr=False`` (the call CIGA makes). ``PROTEINS``' one continuous
  node attribute is therefore dropped (3 one-hot features, not 4);
* graph labels are mapped to ``0..C-1`` (``PROTEINS``/``DD`` store 1/2); the
  metric is the Matthews correlation coefficient.

**In distribution** (``IMDB-BINARY``, ``IMDB-MULTI``, ``REDDIT-BINARY``,
``REDDIT-MULTI-5K``, ``REDDIT-MULTI-12K``, and the size-shift sets under the
names ``NCI1-ID``, ...), the protocol of G-Mixup (Han et al., 2022): a seeded
shuffle cut 70/10/20 into train/val/test (``int(0.7 n)`` and ``int(0.8 n)``
are the cut points). Datasets without node labels get G-Mixup's degree
features: one-hot degrees (``max_degree + 1`` features, the maximum taken over
the whole dataset) when the maximum degree is below 2000, else the degree
standardized over all nodes of the dataset, ``(deg - mean) / std`` (one
feature). Datasets with node labels keep their one-hot node labels. The
metric is accuracy.

Data comes, in order of preference, from the processed cache under ``root``;
the raw TU folder ``root/tu/NAME/raw`` (PyG's :class:`TUDataset` layout); the
offline mirror's ``tu/NAME.zip``; or PyG's usual TU Dortmund download when
there is no mirror. The raw text files are parsed by PyG's ``read_tu_data``
directly: PyG's own processed files (whose ``pre_transform.pt`` PyG reads
with ``weights_only=False``) are neither kept nor read.
"""
from __future__ import annotations

import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.datasets import TUDataset
from torch_geometric.io import read_tu_data
from torch_geometric.utils import degree, is_undirected

from ..files import PathLike, atomic_path
from .cache import (InMemoryGraphs, load_cache, read_graphs, recipe_dir,
                    resolve_root, save_graphs)
from .mirror import MissingDataError, find_mirror, mirror_file
from .registry import DATASETS, DatasetSpec, dataset_spec
from .splits import DatasetSplits

# Bump when the processed graphs change (features, labels, kept fields).
# v2: raw files read without PyG's processed folder; cache read with
# weights_only=True. v3: the cache format of pyg_hma.data.cache (metadata
# in meta.json).
RECIPE = 'tu-v3'

SIZE_SHIFT_DATASETS = ('NCI1', 'NCI109', 'PROTEINS', 'DD')
IN_DISTRIBUTION_DATASETS = ('IMDB-BINARY', 'IMDB-MULTI', 'REDDIT-BINARY',
                            'REDDIT-MULTI-5K', 'REDDIT-MULTI-12K')
ID_SUFFIX = '-ID'

# G-Mixup switches from one-hot to standardized degrees at this maximum degree.
ONEHOT_MAX_DEGREE = 2000


class RawTUGraphs(InMemoryGraphs):
    r"""The graphs of PyG's ``TUDataset(root, name, use_node_attr=False)``,
    parsed straight from the raw ``NAME_*.txt`` files in :obj:`raw_dir` by
    PyG's ``read_tu_data``: nothing is processed to, or loaded from, disk.

    Attributes:
        sizes (dict): ``read_tu_data``'s counts (``num_node_labels``,
            ``num_node_attributes``, ...).
    """
    def __init__(self, raw_dir: PathLike, name: str):
        data, slices, sizes = read_tu_data(str(raw_dir), name)
        super().__init__(data, slices, name)
        self.sizes = sizes
        if self._data.x is not None:  # use_node_attr=False, as TUDataset
            self._data.x = self._data.x[:, sizes['num_node_attributes']:]

    @property
    def num_node_labels(self) -> int:
        return self.sizes['num_node_labels']

    @property
    def num_node_attributes(self) -> int:
        return self.sizes['num_node_attributes']


# ---------------------------------------------------------------------------
# Split rules (pure functions of the node counts / the number of graphs)
# ---------------------------------------------------------------------------

@dataclass
class SplitIndex:
    """Graph indices of each split, plus the thresholds that defined them."""
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    thresholds: Dict[str, float]


def size_shift_split(num_nodes: Sequence[int], seed: int = 0,
                     val_ratio: float = 0.1, train_percentile: float = 50.,
                     test_percentile: float = 90.) -> SplitIndex:
    r"""The size-shift split: small graphs for training, large ones for test.

    Args:
        num_nodes: node count of every graph.
        seed: seed of the validation draw from the training pool.
        val_ratio: share of the training pool held out for validation.
        train_percentile: graphs with at most this percentile of the node
            counts form the training pool (ties included).
        test_percentile: graphs with at least this percentile of the node
            counts form the test split (ties included).

    Percentiles use :func:`numpy.percentile` with its default linear
    interpolation over all graphs.
    """
    n = np.asarray(num_nodes)
    if n.ndim != 1 or n.size == 0:
        raise ValueError('size_shift_split needs a non-empty 1-d sequence of '
                         'node counts')
    if not 0 <= val_ratio < 1:
        raise ValueError(f'val_ratio must lie in [0, 1), got {val_ratio}')
    if not 0 <= train_percentile < test_percentile <= 100:
        raise ValueError(
            f'Need 0 <= train_percentile < test_percentile <= 100, got '
            f'{train_percentile} and {test_percentile}')
    low = float(np.percentile(n, train_percentile))
    high = float(np.percentile(n, test_percentile))
    if high <= low:
        # Then a graph of exactly `low` nodes would be in train and test.
        raise ValueError(
            f'The node counts are too concentrated for a size shift: the '
            f'{train_percentile:g}th and {test_percentile:g}th percentiles '
            f'are both {low:g}, so training and test graphs would overlap.')
    pool = np.flatnonzero(n <= low)
    test = np.flatnonzero(n >= high)
    perm = np.random.default_rng(seed).permutation(pool)
    num_val = int(val_ratio * len(pool))
    return SplitIndex(train=np.sort(perm[num_val:]),
                      val=np.sort(perm[:num_val]), test=test,
                      thresholds={f'p{train_percentile:g}': low,
                                  f'p{test_percentile:g}': high})


def random_split(num_graphs: int, seed: int = 0, train_ratio: float = 0.7,
                 val_ratio: float = 0.1) -> SplitIndex:
    r"""G-Mixup's split: a seeded shuffle cut at ``int(train_ratio * n)`` and
    ``int((train_ratio + val_ratio) * n)``; the rest is the test split.

    Args:
        num_graphs: number of graphs.
        seed: seed of the shuffle.
        train_ratio: share of graphs for training.
        val_ratio: share of graphs for validation.
    """
    if num_graphs <= 0:
        raise ValueError(f'num_graphs must be positive, got {num_graphs}')
    if train_ratio <= 0 or val_ratio < 0 or train_ratio + val_ratio > 1:
        raise ValueError(f'Invalid ratios: train_ratio={train_ratio}, '
                         f'val_ratio={val_ratio}')
    perm = np.random.default_rng(seed).permutation(num_graphs)
    # The epsilon keeps e.g. 0.7 + 0.1 = 0.7999... from losing a graph.
    cut1 = int(np.floor(num_graphs * train_ratio + 1e-9))
    cut2 = int(np.floor(num_graphs * (train_ratio + val_ratio) + 1e-9))
    return SplitIndex(train=perm[:cut1], val=perm[cut1:cut2],
                      test=perm[cut2:], thresholds={})


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------

def degree_features(graphs: Sequence[Data],
                    onehot_max_degree: int = ONEHOT_MAX_DEGREE
                    ) -> Tuple[List[torch.Tensor], str]:
    r"""G-Mixup's node features for graphs without node labels.

    Degrees are out-degrees of each graph's ``edge_index`` (TU edge lists
    hold both directions of every edge). When the maximum degree over all
    graphs is below ``onehot_max_degree`` every node gets
    ``one_hot(deg, max_degree + 1)``; otherwise ``(deg - mean) / std`` with the
    mean and (unbiased) standard deviation over all nodes of all graphs.

    Returns:
        one feature matrix per graph, and a description of the features.
    """
    degs = [degree(g.edge_index[0], g.num_nodes, dtype=torch.long)
            for g in graphs]
    max_degree = max(int(d.max()) if d.numel() else 0 for d in degs)
    if max_degree < onehot_max_degree:
        xs = [F.one_hot(d, max_degree + 1).float() for d in degs]
        return xs, (f'one-hot degree (max degree {max_degree} < '
                    f'{onehot_max_degree}: {max_degree + 1} features)')
    flat = torch.cat(degs).float()
    mean, std = flat.mean().item(), flat.std().item()
    xs = [((d.float() - mean) / std).view(-1, 1) for d in degs]
    return xs, (f'standardized degree (max degree {max_degree} >= '
                f'{onehot_max_degree}): (deg - {mean:.4f}) / {std:.4f}, '
                f'1 feature')


# ---------------------------------------------------------------------------
# Raw data: cache folder, mirror zip or download, read by PyG's TUDataset
# ---------------------------------------------------------------------------

def _extract_tu_zip(zip_path: Path, raw_dir: Path, name: str) -> None:
    """Writes the ``NAME_*.txt`` files of a TU zip flat into ``raw_dir``, the
    layout :class:`TUDataset` reads (the zip nests them in ``NAME/``)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    found = []
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.infolist():
            # Some official zips spell the folder 'NAME//'; only the file
            # name matters, which also rules out path traversal.
            base = member.filename.replace('\\', '/').rsplit('/', 1)[-1]
            if member.is_dir() or not (base.startswith(f'{name}_')
                                       and base.endswith('.txt')):
                continue
            (raw_dir / base).write_bytes(zf.read(member))
            found.append(base)
    needed = [f'{name}_A.txt', f'{name}_graph_indicator.txt',
              f'{name}_graph_labels.txt']
    missing = [f for f in needed if f not in found]
    if missing:
        raise MissingDataError(
            f"'{zip_path}' is not a TU dataset zip of {name}: it lacks "
            f"{', '.join(missing)}.")


def _tu_dataset(name: str, root: Path, mirror: Optional[PathLike]
                ) -> Tuple[RawTUGraphs, str]:
    """Returns the graphs of ``name`` (node attributes dropped, as PyG's
    :class:`TUDataset` with ``use_node_attr=False``) and where their files
    came from.

    The folder ``root/tu/NAME`` holds the raw files and is built atomically
    so that an interrupted run leaves nothing behind. A download goes
    through PyG's :class:`TUDataset` inside the fresh temporary folder; its
    processed files are then deleted, and a ``processed`` folder left by an
    older version is deleted unread.
    """
    folder = root / 'tu'
    source_file = folder / name / 'SOURCE.txt'
    required = [folder / name / 'raw' / f'{name}_{part}.txt'
                for part in ('A', 'graph_indicator', 'graph_labels')]
    if source_file.is_file() and not all(p.is_file() for p in required):
        # Raw files went missing behind the marker: fetch them again (from
        # the mirror, checked) rather than fail or read what is left.
        shutil.rmtree(folder / name)
    if not source_file.is_file():
        url = f'{TUDataset.url}/{name}.zip'
        mirror_root = find_mirror(mirror)
        with atomic_path(folder / name) as tmp:
            if mirror_root is not None:
                try:
                    zip_path = mirror_file(f'tu/{name}.zip', mirror_root,
                                           what=f'TU dataset {name}')
                except MissingDataError as e:
                    raise MissingDataError(
                        f'{e} The TU Dortmund zip is published at '
                        f'{url}.') from e
                _extract_tu_zip(zip_path, tmp / 'raw', name)
                source = f'mirror: {zip_path}'
            else:
                # Downloads into tmp/raw (fresh and private: nothing planted
                # there); PyG's processed files are not kept.
                TUDataset(str(tmp.parent), name)
                shutil.rmtree(tmp / 'processed', ignore_errors=True)
                source = f'download: {url}'
            (tmp / 'SOURCE.txt').write_text(source + '\n')
    # An older version kept PyG's processed folder here: never read it.
    shutil.rmtree(folder / name / 'processed', ignore_errors=True)
    source = source_file.read_text().strip()
    return RawTUGraphs(folder / name / 'raw', name), source


def _process(tu: RawTUGraphs, source: str) -> Tuple[List[Data], dict]:
    """Builds the graphs with the benchmark's node features."""
    graphs = [tu[i] for i in range(len(tu))]
    if tu.num_node_labels > 0:
        xs = [g.x for g in graphs]
        feature = (f'one-hot node labels ({tu.num_node_labels} features)')
        if tu.num_node_attributes > 0:
            feature += (f'; the {tu.num_node_attributes} continuous node '
                        f'attribute(s) are dropped (use_node_attr=False)')
    else:
        xs, feature = degree_features(graphs)
    out = [Data(x=x, edge_index=g.edge_index, y=g.y.view(-1),
                num_nodes=g.num_nodes) for x, g in zip(xs, graphs)]
    meta = {
        'num_graphs': len(out),
        'num_features': int(xs[0].size(-1)),
        'num_classes': max(int(g.y.max()) for g in out) + 1,
        'features': feature,
        'undirected': all(is_undirected(g.edge_index, num_nodes=g.num_nodes)
                          for g in out),
        'source': source,
    }
    return out, meta


def load_tu_graphs(name: str, root: Optional[PathLike] = None,
                   mirror: Optional[PathLike] = None
                   ) -> Tuple[InMemoryGraphs, dict]:
    r"""Loads a TU dataset with the benchmark's node features, processing it
    into ``recipe_dir(root, name, RECIPE)`` on first use (and again, once,
    when that cache cannot be read).

    Args:
        name: a TU dataset name, e.g. ``'PROTEINS'``.
        root: cache folder.
        mirror: offline mirror folder.

    Returns:
        all graphs, and a dict of metadata (``num_features``,
        ``num_classes``, ``features``, ``source``, ...).
    """
    root = resolve_root(root)

    def build(folder: Path) -> None:
        start = time.perf_counter()
        tu, source = _tu_dataset(name, root, mirror)
        graphs, meta = _process(tu, source)
        meta['processing_seconds'] = round(time.perf_counter() - start, 2)
        save_graphs(folder, graphs, meta, RECIPE)

    return load_cache(recipe_dir(root, name, RECIPE), build,
                      lambda folder: read_graphs(folder, name,
                                                 f'processed {name}'))


# ---------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------

def _split_stats(dataset: InMemoryGraphs, index: np.ndarray,
                 num_classes: int) -> dict:
    counts = np.diff(dataset.slices['x'].numpy())[index]
    labels = dataset._data.y[torch.as_tensor(index, dtype=torch.long)]
    return {
        'graphs': int(len(index)),
        'nodes_min': int(counts.min()) if len(index) else None,
        'nodes_max': int(counts.max()) if len(index) else None,
        'nodes_avg': round(float(counts.mean()), 2) if len(index) else None,
        'class_counts': torch.bincount(labels, minlength=num_classes).tolist(),
    }


def _make_splits(spec: DatasetSpec, dataset: InMemoryGraphs, meta: dict,
                 index: SplitIndex, protocol: str) -> DatasetSplits:
    num_classes = meta['num_classes']
    info = {
        'protocol': protocol,
        'num_graphs': meta['num_graphs'],
        'node_thresholds': index.thresholds or None,
        'splits_detail': {
            key: _split_stats(dataset, getattr(index, key), num_classes)
            for key in ('train', 'val', 'test')
        },
        'features': meta['features'],
        'undirected': meta['undirected'],
        'source': meta['source'],
        'processing_seconds': meta['processing_seconds'],
    }
    if not index.thresholds:
        del info['node_thresholds']

    def subset(idx):
        return dataset[torch.as_tensor(idx, dtype=torch.long)]

    return DatasetSplits(name=spec.name, train=subset(index.train),
                         val=subset(index.val), test=subset(index.test),
                         num_features=meta['num_features'],
                         num_classes=num_classes, metric=spec.metric,
                         task=spec.task, info=info)


def load_tu_size_shift(name: str, root: Optional[PathLike] = None,
                       mirror: Optional[PathLike] = None, seed: int = 0, *,
                       val_ratio: float = 0.1, train_percentile: float = 50.,
                       test_percentile: float = 90.) -> DatasetSplits:
    r"""A TU dataset under the size-shift protocol (see the module doc).

    Args:
        name: ``'NCI1'``, ``'NCI109'``, ``'PROTEINS'`` or ``'DD'``.
        root: cache folder.
        mirror: offline mirror folder.
        seed: seed of the validation draw.
        val_ratio: share of the training pool used for validation.
        train_percentile: node-count percentile bounding the training pool.
        test_percentile: node-count percentile bounding the test split.
    """
    spec = dataset_spec(name, load_tu_size_shift, 'size-shift dataset')
    dataset, meta = load_tu_graphs(name, root, mirror)
    num_nodes = np.diff(dataset.slices['x'].numpy())
    index = size_shift_split(num_nodes, seed, val_ratio, train_percentile,
                             test_percentile)
    protocol = (f'size shift: train pool = nodes <= p{train_percentile:g}, '
                f'val = seeded {val_ratio:g} of the pool, test = nodes >= '
                f'p{test_percentile:g} (numpy linear percentiles, ties '
                f'included)')
    return _make_splits(spec, dataset, meta, index, protocol)


def load_tu_in_distribution(name: str, root: Optional[PathLike] = None,
                            mirror: Optional[PathLike] = None, seed: int = 0,
                            *, train_ratio: float = 0.7,
                            val_ratio: float = 0.1) -> DatasetSplits:
    r"""A TU dataset under G-Mixup's in-distribution protocol (see the module
    doc).

    Args:
        name: ``'IMDB-BINARY'``, ``'IMDB-MULTI'``, ``'REDDIT-BINARY'``,
            ``'REDDIT-MULTI-5K'``, ``'REDDIT-MULTI-12K'``, or a size-shift
            dataset with the suffix ``'-ID'`` (e.g. ``'NCI1-ID'``).
        root: cache folder.
        mirror: offline mirror folder.
        seed: seed of the shuffle.
        train_ratio: share of graphs for training.
        val_ratio: share of graphs for validation (the rest is test).
    """
    spec = dataset_spec(name, load_tu_in_distribution,
                        'in-distribution dataset')
    tu_name = name[:-len(ID_SUFFIX)] if name.endswith(ID_SUFFIX) else name
    dataset, meta = load_tu_graphs(tu_name, root, mirror)
    index = random_split(len(dataset), seed, train_ratio, val_ratio)
    protocol = (f'in distribution (G-Mixup): seeded shuffle, '
                f'{train_ratio:g}/{val_ratio:g}/'
                f'{1 - train_ratio - val_ratio:g} train/val/test')
    return _make_splits(spec, dataset, meta, index, protocol)


for _name in SIZE_SHIFT_DATASETS:
    DATASETS.register(DatasetSpec(_name, load_tu_size_shift, metric='mcc',
                                  table=6))
for _name in ([n + ID_SUFFIX for n in SIZE_SHIFT_DATASETS]
              + list(IN_DISTRIBUTION_DATASETS)):
    DATASETS.register(DatasetSpec(_name, load_tu_in_distribution,
                                  metric='accuracy', table=4))
