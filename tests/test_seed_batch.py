"""Seed-batched training (pyg_hma.train.seed_batch): S seeds as one model
give each seed the run it has alone."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from pyg_hma.methods import METHODS, MethodSpec, Objective
from pyg_hma.models import build_model
from pyg_hma.train import TrainConfig, fit
from pyg_hma.train.seed_batch import (CPU_GROUP_ELEMENTS, fit_seeds,
                                      seed_batch_support, seed_group_limit)

from pyg_hma.data.registry import DatasetSplits

from conftest import image_model, molecule_model, molecules, proteins_subset


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def proteins(tmp_path_factory):
    return proteins_subset(tmp_path_factory, 160, 60)


@pytest.fixture()
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def as_float64(splits):
    def convert(ds):
        ds = copy.copy(ds)

        def transform(data):
            data = copy.copy(data)
            data.x = data.x.double()
            return data
        ds.transform = transform
        return ds
    return dataclasses.replace(splits, train=convert(splits.train),
                               val=convert(splits.val),
                               test=convert(splits.test))


def factory(splits, conv, method, dropout=0.0, hma_dropout=0.0):
    return lambda: build_model(
        conv, method, num_classes=splits.num_classes,
        num_features=splits.num_features,
        backbone_kwargs=dict(hidden_channels=16, num_layers=3,
                             dropout=dropout,
                             pooling='max' if conv == 'gin' else 'mean'),
        hma_kwargs=dict(memory_size=32, slots_per_class=4, label_dim=16,
                        dropout=hma_dropout, check_inputs=False))


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-3))


def assert_same_run(a, b, tol):
    assert (a.epochs_run, a.selected_epoch, a.stopped_early) == \
        (b.epochs_run, b.selected_epoch, b.stopped_early)
    for ha, hb in zip(a.history, b.history):
        assert ha['train_loss'] == pytest.approx(hb['train_loss'], rel=tol)
        assert ha['val'] == pytest.approx(hb['val'], rel=tol, abs=tol)
        assert ha['test'] == pytest.approx(hb['test'], rel=tol, abs=tol)
    assert a.best_state.keys() == b.best_state.keys()
    for k in a.best_state:
        assert rel(a.best_state[k], b.best_state[k]) < tol, k


def final_models_close(path_a, path_b, tol):
    a = torch.load(path_a, weights_only=True)['model']
    b = torch.load(path_b, weights_only=True)['model']
    assert a.keys() == b.keys()
    worst = max((rel(a[k], b[k]), k) for k in a)
    assert worst[0] < tol, worst


def group_equals_runs(model_fn, splits, method, cfg, tmp_path,
                      seeds=(0, 1, 2)) -> list:
    r"""Trains :obj:`seeds` one by one (fit) and as one group (fit_seeds,
    no fallback); asserts each seed's run and final checkpoint agree to
    1e-6; returns the group's results."""
    alone = [fit(model_fn, splits, method, cfg, seed=s,
                 checkpoint=tmp_path / f'alone{s}.ckpt') for s in seeds]
    batched = fit_seeds(model_fn, splits, method, cfg, seeds=list(seeds),
                        checkpoint_dir=tmp_path / 'group', fallback='raise')
    for s, a, b in zip(seeds, alone, batched):
        assert b.extra['seed_batch'] is True
        assert_same_run(a, b, 1e-6)
        final_models_close(tmp_path / f'alone{s}.ckpt',
                           tmp_path / 'group' / f'seed{s}.ckpt', 1e-6)
    return batched


# ERM and HMA (momentum encoder, queues), GCN and GIN, with clipping and a
# patience that stops some seeds before others.
@pytest.mark.parametrize('conv,method', [('gcn', 'erm'), ('gin', 'erm'),
                                         ('gcn', 'hma'), ('gin', 'hma')])
def test_equals_sequential_runs(proteins, tmp_path, float64, conv, method):
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, clip_grad_norm=1.0,
                      patience=1)
    model_fn = factory(splits, conv, method)
    batched = group_equals_runs(model_fn, splits, method, cfg, tmp_path)
    for b in batched:  # the selected state loads into the plain model
        model_fn().load_state_dict(b.best_state)
    if (conv, method) == ('gin', 'hma'):  # seeds leave the group early
        assert len({r.epochs_run for r in batched}) > 1, \
            [r.epochs_run for r in batched]


def gmixup_factory(splits, method):
    return lambda: build_model(
        'gin-gmixup', method, num_classes=splits.num_classes,
        num_features=splits.num_features,
        backbone_kwargs=dict(hidden_channels=16, num_layers=5),
        hma_kwargs=dict(memory_size=32, slots_per_class=4, label_dim=16,
                        dropout=0.0, check_inputs=False))


def test_gmixup_gin_is_supported(proteins):
    # Table 4's backbone: seed-batched with a linear head and HMA's readout
    # for every method of table 4.
    for method in ('erm', 'irm', 'vrex', 'hma', 'rma', 'abd', 'abd+syn',
                   'abd+rma', 'dropedge', 'dropnode', 'mmixup'):
        model = gmixup_factory(proteins, method)()
        assert seed_batch_support(model, method) is None, method


# G-Mixup's GIN (table 4): ERM and HMA (momentum encoder, queues), with
# clipping and patience. At lr 1e-2 this 5-layer GIN (ReLU -> BatchNorm,
# sum aggregation) amplifies rounding: a 1e-14 relative change of the
# initial weights moves `fit`'s own weights by up to 1e-1 after 4 epochs
# (and fit_seeds differs from fit by as much). At lr 1e-3 that stays
# ~1e-8, so agreement to 1e-6 tests the stacked forward, not the chaos.
@pytest.mark.parametrize('method', ['erm', 'hma'])
def test_gmixup_gin_equals_sequential_runs(proteins, tmp_path, float64,
                                           method):
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-3, clip_grad_norm=1.0,
                      patience=1)
    group_equals_runs(gmixup_factory(splits, method), splits, method, cfg,
                      tmp_path)


@pytest.fixture(scope='module')
def molecule_splits():
    graphs = molecules(80, seed=3)
    return DatasetSplits(name='molecules', train=graphs[:32],
                         val=graphs[32:56], test=graphs[56:], num_features=9,
                         num_classes=2, metric='rocauc')


# OGB's GNNs as in table 3 (atom and bond encoders, virtual node), BCE on
# one logit, HMA with its momentum encoder; residual GIN-v too. One step per
# epoch, so the per-epoch losses compared are the per-step losses.
@pytest.mark.parametrize('backbone,method,residual', [
    ('gin-v', 'erm', False), ('gcn-v', 'hma', False),
    ('gin-v', 'hma', True)])
def test_ogb_encoders_and_virtual_node_equal_sequential_runs(
        molecule_splits, tmp_path, float64, backbone, method, residual):
    splits = molecule_splits
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, loss='bce')

    model_fn = molecule_model(backbone, method, residual=residual)
    assert seed_batch_support(model_fn(), method) is None
    group_equals_runs(model_fn, splits, method, cfg, tmp_path)


def test_float32_follows_sequential_runs(proteins, tmp_path):
    # In float32 rounding differs (batched matmuls, masked BatchNorm) and
    # Adam amplifies it over many steps; two epochs stay within 1e-5.
    cfg = TrainConfig(epochs=2, batch_size=32)
    model_fn = factory(proteins, 'gcn', 'hma')
    alone = [fit(model_fn, proteins, 'hma', cfg, seed=s,
                 checkpoint=tmp_path / f'alone{s}.ckpt') for s in (0, 1)]
    batched = fit_seeds(model_fn, proteins, 'hma', cfg, seeds=[0, 1],
                        checkpoint_dir=tmp_path)
    for s, a, b in zip((0, 1), alone, batched):
        for ha, hb in zip(a.history, b.history):
            assert ha['train_loss'] == pytest.approx(hb['train_loss'],
                                                     rel=1e-5)


@pytest.mark.parametrize('method', ['hma', 'irm'])
def test_seed_run_does_not_depend_on_its_group(proteins, float64, method):
    # With dropout (and IRM's random environments) a seed draws from its own
    # generators: seed 3 is the same run in group [1, 3] and in [3, 5].
    # (float64: in float32 the padded shapes of a group change the rounding.
    # GIN with max pooling may also break ties between rows that differ by
    # rounding only, ~1e-6 relative in float64.)
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2)
    model_fn = factory(splits, 'gcn', method, dropout=0.3, hma_dropout=0.1)
    a = fit_seeds(model_fn, splits, method, cfg, seeds=[1, 3])[1]
    b = fit_seeds(model_fn, splits, method, cfg, seeds=[3, 5])[0]
    c = fit_seeds(model_fn, splits, method, cfg, seeds=[3])[0]
    assert_same_run(a, b, 1e-8)
    assert_same_run(a, c, 1e-8)
    if method == 'irm':
        assert all('penalty' in h for h in a.history)


def test_group_size_sets_the_speed_only(proteins, float64, tmp_path):
    # Three seeds in groups of at most two: seeds 0 and 1 train as one
    # model, then seed 2 alone, and every run is the one it has in a group
    # of three. Each seed's log says which seeds shared its model.
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2)
    model_fn = factory(splits, 'gcn', 'hma', dropout=0.3, hma_dropout=0.1)
    together = fit_seeds(model_fn, splits, 'hma', cfg, seeds=[0, 1, 2],
                         group_size=3)
    split = fit_seeds(model_fn, splits, 'hma', cfg, seeds=[0, 1, 2],
                      group_size=2, log_dir=tmp_path)
    for a, b in zip(together, split):
        assert_same_run(a, b, 1e-8)
    assert [r.extra['seed_batch_group'] for r in split] == [2, 2, 2]
    assert 'seeds 0, 1 train as one model' in (
        tmp_path / 'seed1.log').read_text()
    assert 'seeds 2 train as one model' in (tmp_path / 'seed2.log').read_text()
    with pytest.raises(ValueError, match='group_size must be at least 1'):
        fit_seeds(model_fn, splits, 'hma', cfg, seeds=[0], group_size=0)


def test_seed_group_limit_follows_the_batch_size(proteins):
    # On a CPU the default group shrinks as batches grow (one activation of
    # the group within CPU_GROUP_ELEMENTS) and never below one seed; on a
    # GPU, and for images, there is no limit.
    model = factory(proteins, 'gcn', 'erm')()  # width 16
    nodes = sum(int(g.num_nodes) for g in proteins.train) / len(
        proteins.train)
    for batch_size in (32, 256, 10**6):
        want = max(1, int(CPU_GROUP_ELEMENTS // (nodes * batch_size * 16)))
        assert seed_group_limit(model, proteins.train, batch_size,
                                'cpu') == want
    assert seed_group_limit(model, proteins.train, 10**6, 'cpu') == 1
    assert seed_group_limit(model, proteins.train, 32, 'cpu') > 10
    assert seed_group_limit(model, proteins.train, 32, 'cuda') is None
    assert seed_group_limit(model, image_splits().train, 32, 'cpu') is None


# Groups of 3, or of at most 2 (seeds 0 and 1 are interrupted after epoch
# 2 while seed 2 has not started: it trains from scratch on resumption).
@pytest.mark.parametrize('group_size', [3, 2])
def test_resume_of_an_interrupted_group(proteins, tmp_path, group_size):
    cfg = TrainConfig(epochs=4, batch_size=32, clip_grad_norm=1.0,
                      lr_step=2)
    model_fn = factory(proteins, 'gcn', 'hma', dropout=0.3, hma_dropout=0.1)
    seeds = [0, 1, 2]
    full = fit_seeds(model_fn, proteins, 'hma', cfg, seeds=seeds,
                     checkpoint_dir=tmp_path / 'full', group_size=group_size)

    class Interrupt(Exception):
        pass

    def stop_after_2(seed, epoch, record):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit_seeds(model_fn, proteins, 'hma', cfg, seeds=seeds,
                  checkpoint_dir=tmp_path / 'run', callbacks=[stop_after_2],
                  group_size=group_size)
    interrupted = seeds[:group_size]
    assert torch.load(tmp_path / 'run' / f'seed{interrupted[-1]}.ckpt',
                      weights_only=True)['epoch'] == 2
    assert (tmp_path / 'run' / 'seed2.ckpt').exists() == (group_size == 3)
    resumed = fit_seeds(model_fn, proteins, 'hma', cfg, seeds=seeds,
                        checkpoint_dir=tmp_path / 'run', resume=True,
                        group_size=group_size)
    for s, a, b in zip(seeds, full, resumed):
        assert b.resumed_from == (3 if s in interrupted else None)
        strip = lambda h: [{k: v for k, v in r.items() if k != 'time_s'}  # noqa
                           for r in h]
        assert strip(a.history) == strip(b.history)
        a_model = torch.load(tmp_path / 'full' / f'seed{s}.ckpt',
                             weights_only=True)['model']
        b_model = torch.load(tmp_path / 'run' / f'seed{s}.ckpt',
                             weights_only=True)['model']
        assert all(torch.equal(a_model[k], b_model[k]) for k in a_model)


def test_seeds_at_different_epochs_catch_up(proteins, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=32)
    model_fn = factory(proteins, 'gcn', 'erm', dropout=0.3)
    full = fit_seeds(model_fn, proteins, 'erm', cfg, seeds=[0, 1],
                     checkpoint_dir=tmp_path / 'full')
    # As if killed between two checkpoint writes: seed 0 has finished
    # epoch 2, seed 1 only epoch 1; seed 1 catches up alone, then rejoins.
    run = tmp_path / 'run'

    class Interrupt(Exception):
        pass

    def stop(seed, epoch, record):
        if epoch == 1:
            raise Interrupt
    with pytest.raises(Interrupt):
        fit_seeds(model_fn, proteins, 'erm', cfg, seeds=[1],
                  checkpoint_dir=run, callbacks=[stop])

    def stop2(seed, epoch, record):
        if epoch == 2:
            raise Interrupt
    with pytest.raises(Interrupt):
        fit_seeds(model_fn, proteins, 'erm', cfg, seeds=[0],
                  checkpoint_dir=run, callbacks=[stop2])
    resumed = fit_seeds(model_fn, proteins, 'erm', cfg, seeds=[0, 1],
                        checkpoint_dir=run, resume=True)
    assert [r.resumed_from for r in resumed] == [3, 2]
    for a, b in zip(full, resumed):
        assert_same_run(a, b, 1e-6)


class _SmoothedLabels(Objective):
    # An objective fit_seeds cannot batch (any type but the known ones).
    name = 'erm-smoothed'

    def __call__(self, model, batch, crit, ctx):
        logits = model(batch)
        return F.cross_entropy(logits, batch.y.view(-1),
                               label_smoothing=0.1), logits, {}


@pytest.fixture()
def unbatchable_method():
    METHODS.register(MethodSpec('erm-smoothed', 'ERM+LS', _SmoothedLabels()))
    yield 'erm-smoothed'
    METHODS.unregister('erm-smoothed')


def test_unsupported_method_falls_back_to_fit(proteins, unbatchable_method):
    cfg = TrainConfig(epochs=1, batch_size=32)
    method = unbatchable_method
    model_fn = factory(proteins, 'gcn', 'erm')
    assert seed_batch_support(model_fn(), method) is not None
    with pytest.warns(UserWarning, match='cannot be seed-batched'):
        res = fit_seeds(model_fn, proteins, method, cfg, seeds=[0, 1])
    alone = fit(model_fn, proteins, method, cfg, seed=1)
    assert res[1].extra['seed_batch'] is False
    assert res[1].history[0]['train_loss'] == alone.history[0]['train_loss']
    with pytest.raises(NotImplementedError):
        fit_seeds(model_fn, proteins, method, cfg, seeds=[0],
                  fallback='raise')
    # M-Mixup mixes before a linear head: with HMA's readout it falls back
    # (and fit refuses it, as before).
    hma_fn = factory(proteins, 'gcn', 'hma')
    assert 'linear head' in seed_batch_support(hma_fn(), 'mmixup')


@pytest.mark.parametrize('method', ['dropedge', 'dropnode', 'mmixup'])
def test_augmenting_methods_are_seed_batched(proteins, float64, method):
    # Each seed thins (or mixes) its own batches with its own generator:
    # batched, and seed 3 is the same run in [1, 3], [3, 5] and alone.
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2)
    model_fn = factory(splits, 'gcn', method, dropout=0.3)
    assert seed_batch_support(model_fn(), method) is None
    a = fit_seeds(model_fn, splits, method, cfg, seeds=[1, 3])
    b = fit_seeds(model_fn, splits, method, cfg, seeds=[3, 5])[0]
    c = fit_seeds(model_fn, splits, method, cfg, seeds=[3])[0]
    assert a[1].extra['seed_batch'] is True
    assert_same_run(a[1], b, 1e-8)
    assert_same_run(a[1], c, 1e-8)
    # The augmentation is drawn: another seed, another run.
    assert a[0].history[0]['train_loss'] != a[1].history[0]['train_loss']


def test_dropedge_and_dropnode_draw_as_pyg():
    # With the global RNG (fit's path) the transforms make PyG's draws:
    # dropout_edge(force_undirected=True) and dropout_node.
    from torch_geometric.data import Batch, Data
    from torch_geometric.utils import dropout_edge, dropout_node, to_undirected
    from pyg_hma.methods import DropEdge, DropNode, StepContext
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n in (6, 9):
        ei = to_undirected(torch.randint(0, n, (2, 12), generator=gen),
                           num_nodes=n)
        graphs.append(Data(x=torch.randn(n, 3, generator=gen), edge_index=ei,
                           edge_attr=torch.randn(ei.size(1), 2, generator=gen),
                           y=torch.zeros(1, dtype=torch.long)))
    batch = Batch.from_data_list(graphs)
    ctx = StepContext(epoch=1)
    torch.manual_seed(5)
    out = DropEdge().transform(batch, ctx)
    torch.manual_seed(5)
    ei, edge_id = dropout_edge(batch.edge_index, p=0.2, force_undirected=True)
    assert torch.equal(out.edge_index, ei)
    assert torch.equal(out.edge_attr, batch.edge_attr[edge_id])
    torch.manual_seed(6)
    out = DropNode().transform(batch, ctx)
    torch.manual_seed(6)
    ei, edge_mask, node_mask = dropout_node(
        batch.edge_index, p=0.2, num_nodes=batch.num_nodes,
        relabel_nodes=True)
    assert torch.equal(out.edge_index, ei)
    assert torch.equal(out.x, batch.x[node_mask])
    assert torch.equal(out.batch, batch.batch[node_mask])
    assert torch.equal(out.edge_attr, batch.edge_attr[edge_mask])
    assert out.num_graphs == batch.num_graphs
    # A generator of its own gives its own draws, repeatably.
    draws = [DropNode().transform(batch, ctx,
                                  torch.Generator().manual_seed(1)).x
             for _ in range(2)]
    assert torch.equal(*draws)


def test_sparse_aggregation_equals_scatter():
    # UnionBatch.aggregate (a sparse matrix product) against PyG's gather
    # and scatter, with a repeated edge, a seed without edges and padding.
    from torch_geometric.data import Batch, Data
    from torch_geometric.utils import scatter
    from pyg_hma.train.stacked import UnionBatch
    gen = torch.Generator().manual_seed(0)

    def graph(n, edges):
        return Data(x=torch.randn(n, 3, generator=gen, dtype=torch.float64),
                    edge_index=torch.tensor(edges, dtype=torch.long).view(2, -1),
                    y=torch.zeros(1, dtype=torch.long))
    batches = [Batch.from_data_list([graph(4, [[0, 1, 1, 2, 0], [1, 0, 2, 1, 1]]),
                                     graph(3, [[0, 2], [2, 0]])]),
               Batch.from_data_list([graph(2, []), graph(1, [])]),
               Batch.from_data_list([graph(5, [[4, 3, 0], [3, 4, 4]]),
                                     graph(2, [[1], [0]])])]
    data = UnionBatch(batches)
    x = torch.randn(data.S * data.size, 3, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    row, col = data.edge_index
    for weighting in ('sum', 'gcn'):
        w = (data.gcn_norm(x.dtype)[1] if weighting == 'gcn'
             else torch.ones(row.numel(), dtype=x.dtype))
        want = scatter(x[row] * w.view(-1, 1), col, 0, dim_size=x.size(0),
                       reduce='sum')
        got = data.aggregate(x, weighting)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        g = torch.randn(got.shape, generator=gen, dtype=x.dtype)
        grad_got, = torch.autograd.grad(got, x, g)
        grad_want, = torch.autograd.grad(want, x, g)
        torch.testing.assert_close(grad_got, grad_want, rtol=1e-12,
                                   atol=1e-12)


def test_cpu_dropout_draw():
    # Seed s's mask is its own generator's float64 uniforms below 1 - p
    # over its real rows (torch's own CPU bernoulli_ draw without MKL);
    # padding rows are kept; kept entries are scaled by 1 / (1 - p).
    from pyg_hma.train.stacked import Noise
    p, rows = 0.3, [5, 2, 4]
    x = torch.rand(3, 5, 7) + 1.0
    out = Noise([torch.Generator().manual_seed(s) for s in (7, 8, 9)]
                ).dropout(x, p, rows)
    for s, seed in enumerate((7, 8, 9)):
        u = torch.rand(rows[s], 7, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))
        want = torch.where(u < 1 - p, x[s, :rows[s]] * (1 / (1 - p)),
                           torch.zeros(()))
        assert torch.equal(out[s, :rows[s]], want)
        assert torch.equal(out[s, rows[s]:], x[s, rows[s]:] * (1 / (1 - p)))


def image_splits(shape=(2, 8, 8), n=96):
    # Colored-MNIST-like samples with two environments, in float64.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (n, ), generator=gen)
    env = torch.arange(n) % 2
    train = TensorDataset(x, y, env)
    val = TensorDataset(x[:48], y[:48], env[:48])
    return DatasetSplits(name='toy-images', train=train, val=val, test=val,
                         num_features=int(x[0].numel()), num_classes=2,
                         metric='accuracy', task='image')


# The Colored MNIST nets: IRM's MLP and the small CNN (grouped
# convolutions, one BatchNorm over the seeds' channels), with ERM, HMA and
# IRM (whose environments come from the dataset, so fit draws none either).
@pytest.mark.parametrize('backbone,method', [('mlp', 'erm'), ('mlp', 'irm'),
                                             ('cnn', 'erm'), ('cnn', 'hma')])
def test_image_nets_equal_sequential_runs(tmp_path, float64, backbone,
                                          method):
    splits = image_splits()
    model_fn = image_model(backbone, method)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2, clip_grad_norm=1.0)
    batched = group_equals_runs(model_fn, splits, method, cfg, tmp_path)
    if method == 'irm':
        assert all('penalty' in h for h in batched[0].history)


# The device check (PYG_HMA_TEST_DEVICE=cuda on a GPU machine,
# benchmarks/gpu_check.sh; the CPU otherwise): on the device, a group
# without dropout trains each seed as fit does there (the stacked layers'
# device code: PyG's scatter instead of the CPU's sparse product, dropout by
# bernoulli_), and with dropout a seed's run does not depend on its group.
# Static: the group padded (hashed dropout) and, on a GPU, captured as CUDA
# graphs ('reduce-overhead'; Inductor on the CPU is checked below).
@pytest.mark.parametrize('static', [False, True])
@pytest.mark.parametrize('method', ['erm', 'hma'])
def test_seed_batch_on_device(proteins, float64, tmp_path, method, static,
                              test_device):
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, clip_grad_norm=1.0)
    options = {}
    if static:
        torch._dynamo.reset()
        options = dict(pad=(4096, 16384), compile=(
            'reduce-overhead' if test_device.type == 'cuda' else None))
    model_fn = factory(splits, 'gcn', method)
    alone = [fit(model_fn, splits, method, cfg, seed=s, device=test_device)
             for s in (0, 1)]
    group = fit_seeds(model_fn, splits, method, cfg, seeds=[0, 1],
                      device=test_device, fallback='raise', **options)
    for a, b in zip(alone, group):
        assert_same_run(a, b, 1e-6)
    noisy = factory(splits, 'gcn', method, dropout=0.3, hma_dropout=0.1)
    a = fit_seeds(noisy, splits, method, cfg, seeds=[1, 3],
                  device=test_device, **options)[1]
    b = fit_seeds(noisy, splits, method, cfg, seeds=[3, 5],
                  device=test_device, **options)[0]
    assert_same_run(a, b, 1e-8)


# Static shapes (--pad): the group's union padded to node and edge budgets,
# masked BatchNorm, hashed dropout. Without dropout every seed trains as
# fit does alone (and as the unpadded group); ERM and HMA (queues, momentum
# encoder), GIN with max pooling, and OGB's encoders with a virtual node.
@pytest.mark.parametrize('conv,method', [('gcn', 'hma'), ('gin', 'erm')])
def test_padded_group_equals_sequential_runs(proteins, float64, tmp_path,
                                             conv, method):
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=1e-2, clip_grad_norm=1.0)
    model_fn = factory(splits, conv, method)
    alone = [fit(model_fn, splits, method, cfg, seed=s) for s in (0, 1)]
    padded = fit_seeds(model_fn, splits, method, cfg, seeds=[0, 1],
                       pad=(64, 128), fallback='raise')
    for a, b in zip(alone, padded):
        assert b.extra['seed_batch'] is True
        assert_same_run(a, b, 1e-6)


def test_padded_group_with_ogb_encoders(molecule_splits, float64):
    cfg = TrainConfig(epochs=3, batch_size=32, lr=1e-2, loss='bce')

    def model_fn():
        return build_model(
            'gin-v', 'hma', num_classes=2, out_channels=1,
            backbone_kwargs=dict(hidden_channels=16, num_layers=3,
                                 dropout=0.0, atom_encoder=True,
                                 bond_encoder=True),
            hma_kwargs=dict(memory_size=32, slots_per_class=4, label_dim=8,
                            dropout=0.0, check_inputs=False))
    plain = fit_seeds(model_fn, molecule_splits, 'hma', cfg, seeds=[0, 1])
    padded = fit_seeds(model_fn, molecule_splits, 'hma', cfg, seeds=[0, 1],
                       pad=(100, 300))
    for a, b in zip(plain, padded):
        assert_same_run(a, b, 1e-6)


def test_union_batch_static_shapes(proteins):
    from pyg_hma.train.stacked import UnionBatch
    from torch_geometric.loader import DataLoader
    batches = [next(iter(DataLoader(proteins.train, batch_size=8,
                                    shuffle=True,
                                    generator=torch.Generator().manual_seed(s)
                                    ))) for s in (0, 1, 2)]
    data = UnionBatch(batches, pad=(64, 256))
    nodes = [int(b.num_nodes) for b in batches]
    edges = sum(int(b.edge_index.size(1)) for b in batches)
    assert data.size % 64 == 0 and data.size > max(nodes)
    most = max(int(b.edge_index.size(1)) for b in batches)
    assert data.edge_index.size(1) == 3 * (-(-most // 256) * 256)
    # Padding edges are self loops on a padding node; no real node
    # receives or sends them.
    extra = data.edge_index[:, edges:]
    assert (extra == 3 * data.size - 1).all()
    assert data.rows.shape == (3, data.size)
    assert data.rows.sum(1).tolist() == nodes
    assert (data.batch[3 * data.size - 1] == 3 * 8).item()


def test_hashed_dropout_is_per_seed_and_fair():
    # Static streams: a seed's mask does not depend on its group or on the
    # padding (its rows keep their masks when more rows follow), keeps
    # about 1 - p, and differs between steps and between seeds.
    from pyg_hma.train.stacked import Noise

    def masks(seeds, rows, steps=2):
        noise = Noise([torch.Generator().manual_seed(s) for s in seeds],
                      static=True)
        out = []
        for _ in range(steps):
            noise.new_step()
            out.append(noise.dropout(torch.ones(len(seeds), rows, 16), 0.3))
        return out
    a = masks([4, 7], 50)
    b = masks([7], 80)
    assert torch.equal(a[0][1], b[0][0][:50])
    assert torch.equal(a[1][1], b[1][0][:50])
    assert not torch.equal(a[0][0], a[0][1])
    assert not torch.equal(b[0][0], b[1][0])
    kept = (b[0][0] > 0).double().mean().item()
    assert abs(kept - 0.7) < 0.03, kept
    with pytest.raises(RuntimeError, match='new_step'):
        Noise([torch.Generator()], static=True).dropout(torch.ones(1, 2, 2),
                                                        0.5)


def test_padded_group_with_dropout_does_not_depend_on_its_group(proteins,
                                                                float64):
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2)
    model_fn = factory(splits, 'gcn', 'hma', dropout=0.3, hma_dropout=0.1)
    a = fit_seeds(model_fn, splits, 'hma', cfg, seeds=[1, 3],
                  pad=(32, 64))[1]
    b = fit_seeds(model_fn, splits, 'hma', cfg, seeds=[3, 5],
                  pad=(128, 512))[0]
    assert_same_run(a, b, 1e-8)


def test_compiled_group_trains_like_eager(proteins, float64):
    # torch.compile (Inductor) of the group's training forward, static
    # shapes and hashed dropout, gives the eager padded run, dropout on.
    # One node and edge budget holds every batch (one shape, one compile).
    # ERM: the readout's compile takes minutes on a CPU; the next test
    # checks that HMA traces without a graph break. (Inductor's backward
    # was once wrong here: see _masked_seed_batch_norm.)
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    splits = as_float64(proteins)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, clip_grad_norm=1.0)
    model_fn = factory(splits, 'gcn', 'erm', dropout=0.3)
    eager = fit_seeds(model_fn, splits, 'erm', cfg, seeds=[0, 1],
                      pad=(4096, 16384))
    compiled = fit_seeds(model_fn, splits, 'erm', cfg, seeds=[0, 1],
                         pad=(4096, 16384), compile='default')
    assert not counters['graph_break'], dict(counters['graph_break'])
    for a, b in zip(eager, compiled):
        assert_same_run(a, b, 1e-6)


def test_hma_group_forward_traces_whole(proteins):
    # The stacked HMA training step (both encoders, the readout with its
    # queue write and hashed dropout) is one graph per function for
    # torch.compile: no graph break, so 'reduce-overhead' can capture it.
    from torch_geometric.loader import DataLoader
    from pyg_hma.train.stacked import (Noise, StackedModel, encoder_forward,
                                       readout_forward, union_of)
    model_fn = factory(proteins, 'gcn', 'hma', dropout=0.3, hma_dropout=0.1)
    stacked = StackedModel([model_fn(), model_fn()])
    batches = [next(iter(DataLoader(proteins.train, batch_size=8)))] * 2
    data = union_of(batches, (256, 1024))
    noise = Noise([torch.Generator().manual_seed(s) for s in (0, 1)],
                  static=True)
    noise.new_step()
    P, m = stacked.tensors, stacked.template
    found = torch._dynamo.explain(encoder_forward)(
        m.encoder, P, 'encoder.', data, noise, True)
    assert found.graph_break_count == 0, found.break_reasons
    h = encoder_forward(m.encoder, P, 'encoder.', data, noise, True)
    found = torch._dynamo.explain(readout_forward)(
        m.readout, P, 'readout.', h, data.y, h.detach(), noise, True)
    assert found.graph_break_count == 0, found.break_reasons
    assert found.graph_count == 1


def test_padded_checkpoint_does_not_resume_an_unpadded_group(proteins,
                                                             tmp_path):
    # Hashed dropout is another random stream: a group's checkpoints say
    # whether they hold a static run, and resume refuses the other kind.
    cfg = TrainConfig(epochs=1, batch_size=32)
    model_fn = factory(proteins, 'gcn', 'erm', dropout=0.3)
    fit_seeds(model_fn, proteins, 'erm', cfg, seeds=[0],
              checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match='different run configuration'):
        fit_seeds(model_fn, proteins, 'erm', cfg, seeds=[0], resume=True,
                  checkpoint_dir=tmp_path, pad=(256, 1024))
