"""The training engine: learning, best-validation selection, early stopping,
exact resumption, and the objectives of the baselines."""
import dataclasses
import math

import pytest
import torch
from torch.utils.data import TensorDataset
from torch_geometric.data import Batch

import pyg_hma.train.engine as engine
from pyg_hma.data import DatasetSplits
from pyg_hma.models import build_model
from pyg_hma.train import BestTracker, TrainConfig, evaluate, fit
from pyg_hma.loader import pyg_loader, random_subset
from pyg_hma.methods import (IRM, Criterion, DropEdge, DropHyperparameters,
                             DropNode, PenaltyHyperparameters, StepContext,
                             VREx)

from conftest import proteins_subset


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def proteins(tmp_path_factory):
    # A small real problem: 300 training graphs, 100 each for val and test.
    return proteins_subset(tmp_path_factory, 300, 100)


def gcn(splits, method='erm', hidden=16):
    return lambda: build_model(
        'gcn', method, num_classes=splits.num_classes,
        num_features=splits.num_features,
        backbone_kwargs=dict(hidden_channels=hidden, num_layers=2,
                             dropout=0.3),
        hma_kwargs=dict(memory_size=64, slots_per_class=4, label_dim=16,
                        check_inputs=False))


def toy_splits(n=64):
    """Random image-like samples: enough for scripted-metric tests."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 2, 2, generator=gen)
    y = torch.randint(0, 2, (n, ), generator=gen)
    ds = TensorDataset(x, y)
    return DatasetSplits(name='toy', train=ds, val=ds, test=ds,
                         num_features=4, num_classes=2, metric='accuracy',
                         task='image')


def toy_model():
    return build_model('mlp', 'erm', num_classes=2, input_shape=(1, 2, 2),
                       backbone_kwargs=dict(hidden_channels=8))


def script_metrics(monkeypatch, val, test):
    """Makes the engine's evaluation return scripted values: the i-th call
    on the validation split returns val[i], on the test split test[i]."""
    calls = {'val': 0, 'test': 0}
    splits_seen = []

    def fake(model, loader, metric, device, dataset=None):
        # The engine evaluates 'val' first, then each test split.
        name = 'val' if len(splits_seen) % 2 == 0 else 'test'
        splits_seen.append(name)
        seq = val if name == 'val' else test
        value = seq[calls[name]]
        calls[name] += 1
        return value

    monkeypatch.setattr(engine, 'evaluate', fake)


# --------------------------------------------------------------------------


def test_engine_learns_on_proteins(proteins):
    # Evaluate on the training graphs themselves: eval-mode training accuracy
    # must clearly beat always predicting the majority class.
    splits = dataclasses.replace(proteins, metric='accuracy',
                                 val=proteins.train)
    y = torch.cat([d.y for d in proteins.train])
    majority = float(torch.bincount(y).max()) / len(y)
    res = fit(gcn(splits), splits, 'erm', TrainConfig(epochs=15, lr=1e-2),
              seed=0)
    assert res.val > majority + 0.08, (res.val, majority)
    first = res.history[0]['train_loss']
    assert res.history[-1]['train_loss'] < first


def test_best_validation_selection(monkeypatch):
    val = [0.50, 0.70, 0.60, 0.70, float('nan'), 0.65]
    test = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60]
    script_metrics(monkeypatch, val, test)
    res = fit(toy_model, toy_splits(), 'erm', TrainConfig(epochs=6), seed=0)
    # Epoch 2 is the first maximum; the tie at epoch 4 and NaN do not win.
    assert res.selected_epoch == 2
    assert res.val == 0.70 and res.test == {'test': 0.20}
    assert [h['val'] for h in res.history][:4] == val[:4]
    assert res.epochs_run == 6 and not res.stopped_early


def test_early_stopping_counts_only_after_warmup(monkeypatch):
    # Improves until epoch 2, then never again. Patience 3 with 4 warm-up
    # epochs: epochs 3 and 4 do not count, 5, 6, 7 do -> stop after 7.
    val = [0.5, 0.6] + [0.55] * 20
    script_metrics(monkeypatch, val, [0.0] * 22)
    cfg = TrainConfig(epochs=22, patience=3, warmup=4)
    res = fit(toy_model, toy_splits(), 'erm', cfg, seed=0)
    assert res.stopped_early and res.epochs_run == 7
    assert res.selected_epoch == 2


def test_early_stopping_resets_on_improvement(monkeypatch):
    val = [0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.9, 0.9]
    script_metrics(monkeypatch, val, list(range(len(val))))
    res = fit(toy_model, toy_splits(), 'erm',
              TrainConfig(epochs=9, patience=3, warmup=0), seed=0)
    # 4 improves, 5-7 are bad -> stops after 7, before the 0.9 at epoch 8.
    assert res.epochs_run == 7 and res.selected_epoch == 4
    assert res.test == {'test': 3}


def test_best_tracker_state_round_trip():
    a = BestTracker(patience=2, warmup=1)
    for epoch, v in enumerate([0.3, 0.2, 0.4, 0.1], start=1):
        a.update(epoch, v, {'epoch': epoch})
    b = BestTracker(patience=2, warmup=1)
    b.load_state_dict(a.state_dict())
    assert (b.best_epoch, b.bad_epochs, b.stopped) == (3, 1, False)
    assert b.update(5, 0.0, {}) is False and b.stopped


@pytest.mark.parametrize('method', ['hma', 'irm'])
def test_resume_gives_the_same_result(proteins, tmp_path, method):
    cfg = TrainConfig(epochs=4, batch_size=32, clip_grad_norm=1.0)
    full = fit(gcn(proteins, method), proteins, method, cfg, seed=3,
               checkpoint=tmp_path / 'full.ckpt')

    class Interrupt(Exception):
        pass

    def stop_after_2(epoch, record):
        if epoch == 2:
            raise Interrupt

    ckpt = tmp_path / 'run.ckpt'
    with pytest.raises(Interrupt):
        fit(gcn(proteins, method), proteins, method, cfg, seed=3,
            checkpoint=ckpt, callbacks=[stop_after_2])
    assert torch.load(ckpt, weights_only=True)['epoch'] == 2
    resumed = fit(gcn(proteins, method), proteins, method, cfg, seed=3,
                  checkpoint=ckpt, resume=True)
    assert resumed.resumed_from == 3

    def strip(history):
        return [{k: v for k, v in h.items() if k != 'time_s'}
                for h in history]

    assert strip(resumed.history) == strip(full.history)
    assert (resumed.selected_epoch, resumed.val, resumed.test) == \
        (full.selected_epoch, full.val, full.test)
    # The final weights (and HMA's queue) are identical too.
    a = torch.load(tmp_path / 'full.ckpt', weights_only=True)['model']
    b = torch.load(ckpt, weights_only=True)['model']
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if method == 'hma':
        assert int((a['readout.queue_labels'] >= 0).sum()) == 64


def test_resume_refuses_another_configuration(proteins, tmp_path):
    ckpt = tmp_path / 'run.ckpt'
    fit(gcn(proteins), proteins, 'erm', TrainConfig(epochs=1), seed=0,
        checkpoint=ckpt)
    with pytest.raises(ValueError, match='different run configuration'):
        fit(gcn(proteins), proteins, 'erm', TrainConfig(epochs=2, lr=0.1),
            seed=0, checkpoint=ckpt, resume=True)


def test_resume_refuses_another_engine_version(proteins, tmp_path):
    # A checkpoint of an older engine version: finishing the run with
    # today's code would make one run of two engines.
    from pyg_hma.files import atomic_torch_save
    from pyg_hma.train.results import ENGINE_VERSION
    ckpt = tmp_path / 'run.ckpt'
    cfg = TrainConfig(epochs=2)
    fit(gcn(proteins), proteins, 'erm', cfg, seed=0, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state['engine'] == ENGINE_VERSION
    atomic_torch_save(dict(state, engine=ENGINE_VERSION - 1), ckpt)
    with pytest.raises(ValueError, match=f'engine version '
                       f'{ENGINE_VERSION - 1} and this code is version '
                       f'{ENGINE_VERSION}'):
        fit(gcn(proteins), proteins, 'erm', cfg, seed=0, checkpoint=ckpt,
            resume=True)
    # One from before the engine was recorded resumes.
    del state['engine']
    atomic_torch_save(state, ckpt)
    assert fit(gcn(proteins), proteins, 'erm', cfg, seed=0, checkpoint=ckpt,
               resume=True).resumed_from == 3


def test_same_seed_same_run_and_data_order(proteins):
    cfg = TrainConfig(epochs=2)
    a = fit(gcn(proteins), proteins, 'erm', cfg, seed=1)
    b = fit(gcn(proteins), proteins, 'erm', cfg, seed=1)
    c = fit(gcn(proteins), proteins, 'erm', cfg, seed=2)
    assert a.history[-1]['train_loss'] == b.history[-1]['train_loss']
    assert a.history[-1]['train_loss'] != c.history[-1]['train_loss']
    # The shuffle of an epoch depends on (seed, epoch) only.
    g = torch.Generator()

    def order(seed, epoch):
        g.manual_seed(engine.epoch_seed(seed, epoch))
        loader = pyg_loader(proteins.train, batch_size=300, shuffle=True,
                            generator=g)
        return torch.diff(next(iter(loader)).ptr)  # node count per graph

    assert torch.equal(order(0, 5), order(0, 5))
    assert not torch.equal(order(0, 5), order(0, 6))


def test_evaluate_does_not_write_hma_memory(proteins):
    model = gcn(proteins, 'hma')()
    loader = pyg_loader(proteins.val, batch_size=32, shuffle=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, loader, 'mcc', torch.device('cpu'))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------
# Objectives


def test_bce_ignores_unlabelled_targets():
    crit = Criterion('bce')
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    y = torch.tensor([[1.0], [float('nan')], [0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[[0, 2]], y[[0, 2]])
    assert torch.allclose(crit.mean(logits, y), expected)
    assert crit.tokens(y).tolist() == [1, 0, 0]


class _Fixed(torch.nn.Module):
    """A 'model' returning given logits (times a parameter)."""
    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch, y=None):
        return self.logits * self.w


def test_irm_and_vrex_penalties_match_their_definitions():
    torch.manual_seed(0)
    logits = torch.randn(8, 3)
    y = torch.randint(0, 3, (8, ))
    env = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    batch = type('B', (), dict(y=y, env=env))()
    crit = Criterion('ce')
    ctx = StepContext(epoch=1)
    ce = torch.nn.functional.cross_entropy

    risks, grads = [], []
    for e in (0, 1):
        scale = torch.ones((), requires_grad=True)
        r = ce(logits[env == e] * scale, y[env == e])
        grads.append(torch.autograd.grad(r, scale)[0])
        risks.append(r.detach())
    _, _, extras = IRM()(_Fixed(logits), batch, crit, ctx)
    assert torch.allclose(extras['penalty'],
                          torch.stack(grads).pow(2).mean(), atol=1e-6)
    _, _, extras = VREx()(_Fixed(logits), batch, crit, ctx)
    assert torch.allclose(extras['penalty'],
                          torch.stack(risks).var(unbiased=False), atol=1e-6)


def test_irm_penalty_annealing():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 2), torch.randint(0, 2, (6, ))
    batch = type('B', (), dict(y=y, env=torch.tensor([0, 0, 0, 1, 1, 1])))()
    crit = Criterion('ce')
    early = StepContext(epoch=2, hyperparameters=PenaltyHyperparameters(
        penalty_weight=100.0, penalty_anneal_epochs=2))
    late = dataclasses.replace(early, epoch=3)
    loss_early, _, ex = IRM()(_Fixed(logits), batch, crit, early)
    loss_late, _, _ = IRM()(_Fixed(logits), batch, crit, late)
    erm = crit.mean(logits, y)
    assert torch.allclose(loss_early, erm + ex['penalty'])
    assert torch.allclose(loss_late, (erm + 100 * ex['penalty']) / 100)


@pytest.mark.parametrize('objective', [DropEdge(), DropNode()])
def test_drop_objectives_give_valid_smaller_batches(proteins, objective):
    batch = Batch.from_data_list([proteins.train[i] for i in range(16)])
    seen = {}

    def spy(b, y=None):
        seen['batch'] = b
        return torch.zeros(b.num_graphs, 2, requires_grad=True)

    torch.manual_seed(0)
    objective(spy, batch, Criterion('ce'), StepContext(
        1, DropHyperparameters(drop_ratio=0.5)))
    out = seen['batch']
    assert out.num_graphs == batch.num_graphs
    assert out.edge_index.size(1) < batch.edge_index.size(1)
    assert int(out.edge_index.max()) < out.x.size(0)
    assert out.batch.size(0) == out.x.size(0)
    if isinstance(objective, DropNode):
        assert out.x.size(0) < batch.x.size(0)
    # The input batch itself is left alone.
    assert batch.edge_index.size(1) == sum(
        proteins.train[i].edge_index.size(1) for i in range(16))


def test_rocauc_without_ogb_or_sklearn_matches_sklearn(monkeypatch):
    import sys
    from sklearn.metrics import roc_auc_score
    from pyg_hma.train import metrics
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (200, 2), generator=gen).float()
    y[::7, 1] = float('nan')  # unlabelled entries
    # Rounded scores: many ties, which both must interpolate alike.
    logits = (torch.randn(200, 2, generator=gen) * 2).round() / 2
    expected = [roc_auc_score(y[y[:, t] == y[:, t], t].numpy(),
                              logits[y[:, t] == y[:, t], t].numpy())
                for t in range(2)]
    reference = metrics.rocauc(y, logits, 'ogbg-molhiv-2tasks')
    assert reference == pytest.approx(sum(expected) / 2, abs=1e-12)
    monkeypatch.setattr(metrics, '_evaluator', lambda name: None)
    monkeypatch.setitem(sys.modules, 'sklearn.metrics', None)  # no sklearn
    assert metrics.rocauc(y, logits) == pytest.approx(reference, abs=1e-12)
    one_class = torch.zeros(10, 1)
    assert math.isnan(metrics.rocauc(one_class, torch.randn(10, 1)))


def test_mcc_without_sklearn_matches_sklearn(monkeypatch):
    import sys

    import numpy as np
    from sklearn.metrics import matthews_corrcoef as reference

    from pyg_hma.train.metrics import matthews_corrcoef
    rng = np.random.default_rng(0)
    cases = []
    for k in (2, 3, 5):
        a = rng.integers(0, k, 300)
        b = np.where(rng.random(300) < 0.6, a, rng.integers(0, k, 300))
        cases.append((a, b))
    cases.append((np.array([0, 1, 1]), np.array([1, 1, 1])))  # undefined
    expected = [reference(a, b) for a, b in cases]
    monkeypatch.setitem(sys.modules, 'sklearn.metrics', None)  # no sklearn
    got = [matthews_corrcoef(a, b) for a, b in cases]
    assert got == pytest.approx(expected, abs=1e-12)


def test_no_finite_validation_score_falls_back_to_last_epoch(monkeypatch):
    nan = float('nan')
    script_metrics(monkeypatch, [nan, nan, nan], [0.1, 0.2, 0.3])
    res = fit(toy_model, toy_splits(), 'erm', TrainConfig(epochs=3), seed=0)
    assert res.selected_epoch == 3 and res.test == {'test': 0.3}


def test_device_loader_is_a_drop_in_replacement(proteins):
    # Same batches in the same order as PyG's loader: the same run.
    pytest.importorskip('pyg_hma.loader.device')
    cfg = TrainConfig(epochs=2)
    a = fit(gcn(proteins, 'hma'), proteins, 'hma', cfg, seed=4, loader='pyg')
    b = fit(gcn(proteins, 'hma'), proteins, 'hma', cfg, seed=4,
            loader='device')
    strip = [{k: v for k, v in h.items() if k != 'time_s'}
             for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != 'time_s'}
                     for h in b.history]


def _no_dropout_gcn(splits, method):
    return lambda: build_model(
        'gcn', method, num_classes=splits.num_classes,
        num_features=splits.num_features,
        backbone_kwargs=dict(hidden_channels=16, num_layers=2, dropout=0.0),
        hma_kwargs=dict(memory_size=64, slots_per_class=4, label_dim=16,
                        dropout=0.0, check_inputs=False))


def _history(res):
    return [(h['train_loss'], h['val'], h['test']['test'])
            for h in res.history]


@pytest.mark.parametrize('method', ['erm', 'hma'])
def test_padded_batches_give_the_same_run(proteins, method):
    # Without dropout (whose draws cover the padding rows too) a padded run
    # is the same run up to float rounding, which Adam amplifies a little on
    # the biases before BatchNorm (their gradient is zero up to rounding).
    cfg = TrainConfig(epochs=2)
    a = fit(_no_dropout_gcn(proteins, method), proteins, method, cfg, seed=1,
            loader='device')
    b = fit(_no_dropout_gcn(proteins, method), proteins, method, cfg, seed=1,
            loader='device', pad=(64, 128))
    for (la, va, ta), (lb, vb, tb) in zip(_history(a), _history(b)):
        assert lb == pytest.approx(la, rel=1e-4)
        assert (vb, tb) == pytest.approx((va, ta), abs=1e-6)
    assert a.selected_epoch == b.selected_epoch
    # The unpadded run differs from a run with another seed by far more.
    c = fit(_no_dropout_gcn(proteins, method), proteins, method, cfg, seed=2,
            loader='device', pad=(64, 128))
    assert abs(_history(c)[0][0] - _history(a)[0][0]) > 1e-3


def test_compiled_padded_run_matches_eager(proteins):
    # torch.compile of the whole HMA model (fixed shapes from padding) trains
    # like the eager model up to float rounding.
    cfg = TrainConfig(epochs=1)
    small = dataclasses.replace(
        proteins, train=random_subset(proteins.train, 96, 0),
        val=random_subset(proteins.val, 32, 0),
        test=random_subset(proteins.test, 32, 0))
    torch._dynamo.reset()
    a = fit(_no_dropout_gcn(small, 'hma'), small, 'hma', cfg, seed=2,
            loader='device', pad=(512, 2048))
    b = fit(_no_dropout_gcn(small, 'hma'), small, 'hma', cfg, seed=2,
            loader='device', pad=(512, 2048), compile='default')
    (la, va, ta), = _history(a)
    (lb, vb, tb), = _history(b)
    assert lb == pytest.approx(la, rel=1e-4)
    assert (vb, tb) == pytest.approx((va, ta), abs=1e-6)


def test_compile_model_keeps_state_dict_keys(proteins):
    model = _no_dropout_gcn(proteins, 'hma')()
    keys = list(model.state_dict())
    assert engine.compile_model(model) is model
    assert list(model.state_dict()) == keys  # checkpoints stay loadable
    assert model._compiled_call_impl is not None


def test_static_shape_options_are_checked(proteins):
    cfg = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="edits the graphs"):
        fit(gcn(proteins), proteins, 'dropnode', cfg, pad=(64, 128))
    with pytest.raises(ValueError, match='does not support padded'):
        fit(toy_model, toy_splits(), 'erm', cfg, pad=(64, 128))
    with pytest.raises(ValueError, match='positive'):
        fit(gcn(proteins), proteins, 'erm', cfg, pad=(0, 128))
    with pytest.raises(ValueError, match='compile must be'):
        fit(gcn(proteins), proteins, 'erm', cfg, compile='fast')


# --------------------------------------------------------------------------
# Eval modes and the selected model


def label_sorted(dataset):
    """The samples of a PyG dataset ordered by label: like NCI1's raw file."""
    order = torch.argsort(torch.cat([d.y for d in dataset]), stable=True)
    return dataset[order]


def test_eval_modes_score_as_documented(proteins):
    splits = dataclasses.replace(proteins, val=label_sorted(proteins.val))
    cfg = TrainConfig(epochs=2, eval_mode='order')
    res = fit(gcn(splits, 'hma'), splits, 'hma', cfg, seed=0,
              compare_eval_modes=True)
    for rec in res.history:  # the run's own mode is the primary score
        assert set(rec['by_eval_mode']) == set(engine.EVAL_MODES)
        assert rec['by_eval_mode']['order']['val'] == rec['val']
    model = gcn(splits, 'hma')()
    model.load_state_dict(res.best_state)
    score = engine.SplitScorer(pyg_loader, splits, 32, 0, torch.device('cpu'))
    by_mode = {m: score(model, m) for m in engine.EVAL_MODES}
    selected = res.history[res.selected_epoch - 1]['by_eval_mode']
    for mode in engine.EVAL_MODES:  # the best state is the selected model
        assert by_mode[mode]['val'] == selected[mode]['val']
    assert score(model, 'shuffled') == by_mode['shuffled']  # fixed order
    # 'order' is what the engine's score used to be (dataset order, batch
    # inference); the readout's own setting is restored afterwards.
    readout = model.readout
    assert readout.inference == 'batch'
    with engine.eval_mode_of(model, 'independent'):
        assert readout.inference == 'independent'
    assert readout.inference == 'batch'
    order_loader = pyg_loader(splits.val, batch_size=32, shuffle=False)
    assert evaluate(model, order_loader, 'mcc', torch.device('cpu')) == \
        by_mode['order']['val']

    # Independent predictions do not depend on the other samples: the same
    # logits in label order and in shuffled batches of another size.
    with engine.eval_mode_of(model, 'independent'):
        a, ya = engine.predict(model, pyg_loader(splits.val, batch_size=32,
                                                 shuffle=False), 'cpu')
        perm = torch.randperm(len(splits.val),
                              generator=torch.Generator().manual_seed(1))
        b, yb = engine.predict(model, pyg_loader(splits.val[perm],
                                                 batch_size=7,
                                                 shuffle=False), 'cpu')
    assert torch.allclose(a[perm], b, atol=1e-5)
    with engine.eval_mode_of(model, 'order'):
        c, _ = engine.predict(model, pyg_loader(splits.val[perm],
                                                batch_size=7,
                                                shuffle=False), 'cpu')
    assert not torch.allclose(a[perm], c, atol=1e-5)


def test_batch_independent_models_score_the_same_in_every_mode(proteins):
    splits = dataclasses.replace(proteins, val=label_sorted(proteins.val))
    res = fit(gcn(splits, 'rma'), splits, 'rma', TrainConfig(epochs=1),
              seed=0, compare_eval_modes=True)
    scores = res.history[0]['by_eval_mode']
    assert not engine.batch_dependent(gcn(splits, 'rma')())
    assert engine.batch_dependent(gcn(splits, 'hma')())
    assert scores['order'] == scores['shuffled'] == scores['independent']


def test_select_by_eval_mode():
    def rec(epoch, **vals):
        return {'epoch': epoch, 'by_eval_mode': {
            m: {'val': v, 'test': {'test': epoch / 10}}
            for m, v in vals.items()}}
    history = [rec(1, order=0.2, independent=float('nan')),
               rec(2, order=0.5, independent=0.3),
               rec(3, order=0.5, independent=0.4)]
    chosen = engine.select_by_eval_mode(history)
    assert chosen['order'] == {'selected_epoch': 2, 'val': 0.5,
                               'test': {'test': 0.2}}
    assert chosen['independent']['selected_epoch'] == 3


def test_resume_keeps_the_selected_model(proteins, tmp_path):
    cfg = TrainConfig(epochs=3)
    full = fit(gcn(proteins, 'hma'), proteins, 'hma', cfg, seed=2)

    class Interrupt(Exception):
        pass

    def stop(epoch, record):
        if epoch == 2:
            raise Interrupt

    ckpt = tmp_path / 'run.ckpt'
    with pytest.raises(Interrupt):
        fit(gcn(proteins, 'hma'), proteins, 'hma', cfg, seed=2,
            checkpoint=ckpt, callbacks=[stop])
    resumed = fit(gcn(proteins, 'hma'), proteins, 'hma', cfg, seed=2,
                  checkpoint=ckpt, resume=True)
    assert resumed.selected_epoch == full.selected_epoch
    assert full.best_state.keys() == resumed.best_state.keys()
    assert all(torch.equal(full.best_state[k], resumed.best_state[k])
               for k in full.best_state)
