r"""Graph-SST5 and Graph-Twitter, raw: the sentences and labels, read from
the raw text, and DIG's processed files.

* **Graph-SST5**: the Stanford Sentiment Treebank PTB trees in the order
  train, dev, test (8544 + 1101 + 2210 = 11855 sentences). Words are the
  tree's leaves, *keeping the treebank tokenization* (PTB escapes such as
  ``-LRB-`` and ``\/`` are undone); the label is the root's fine-grained
  label 0-4.
* **Graph-Twitter**: Dong et al. (2014) in the order train, test
  (6248 + 692 = 6940 sentences). Every ``$T$`` is replaced by the target
  phrase and the text, which is already tokenized and lower-cased, is split
  on white space (not re-tokenized by spaCy, so that a word is exactly a
  token of the source). Labels -1/0/1 become 0/1/2.

The raw text is read from the offline mirror (``text/sst5/*.txt.gz``,
``text/twitter/*.raw``) or downloaded from the same public sources and
checked against the same SHA-256 digests (:func:`raw_texts`).

DIG's processed files (Yuan et al., *Explainability in GNNs: A Taxonomic
Survey*; the ``SentiGraphDataset`` layout) hold the graphs the benchmarks
were published on (:func:`read_dig_sentigraph`). Their node features are a
pickled NumPy array, DIG's format: it is read by an unpickler that refuses
every class but NumPy's array and dtype (:func:`load_array_pickle`), so a
planted file cannot run code.
"""
from __future__ import annotations

import gzip
import json
import os.path as osp
import pickle
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch_geometric.data import Data

from ..files import PathLike, atomic_path, sha256
from .mirror import MissingDataError, find_mirror, mirror_file

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
RAW_FILES = {'Graph-SST5': _SST5_FILES, 'Graph-Twitter': _TWITTER_FILES}

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


def raw_texts(name: str, root: Path, mirror: Optional[PathLike]
              ) -> Tuple[List[str], str]:
    """The raw files of ``name``, from the mirror or else downloaded (into
    ``{root}/{name}/text/``, checked against the same digests)."""
    files = RAW_FILES[name]
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
