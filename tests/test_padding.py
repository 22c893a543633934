"""Padded (static-shape) batches give the same outputs, losses, gradients,
BatchNorm statistics and HMA queue writes as the original batches."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from pyg_hma.loader import (DeviceGraphLoader, PaddedLoader, batch_sizes,
                            pad_batch)
from pyg_hma.models import build_model
from pyg_hma.nn.stacked import seed_batch_norm, stacked_state

from conftest import molecules


pytestmark = pytest.mark.usefixtures('one_thread')


def featured_graphs(num, features=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num):
        n = int(torch.randint(2, 10, (1, ), generator=gen))
        graphs.append(Data(x=torch.randn(n, features, generator=gen),
                           edge_index=torch.randint(n, (2, 2 * n),
                                                    generator=gen),
                           y=torch.tensor([i % 3])))
    return graphs


def test_pad_batch_layout():
    batch = Batch.from_data_list(molecules(4))
    nodes, edges = batch_sizes(batch)
    assert (nodes, edges) == (batch.num_nodes, batch.edge_index.size(1))
    padded = pad_batch(batch, nodes + 5, edges + 7)
    assert padded.num_graphs == 4
    assert padded.x.shape == (nodes + 5, 9)
    assert torch.equal(padded.x[:nodes], batch.x)
    assert (padded.x[nodes:] == 0).all()
    assert torch.equal(padded.edge_index[:, :edges], batch.edge_index)
    assert (padded.edge_index[:, edges:] == nodes).all()  # self loops
    assert padded.edge_attr.shape == (edges + 7, 3)
    assert (padded.edge_attr[edges:] == 0).all()
    assert torch.equal(padded.batch[:nodes], batch.batch)
    assert (padded.batch[nodes:] == 4).all()  # the padding graph
    assert padded.node_mask.sum() == nodes and padded.node_mask[:nodes].all()
    assert torch.equal(padded.y, batch.y)  # graph-level: untouched
    # The original batch is not modified.
    assert batch.x.size(0) == nodes and 'node_mask' not in batch
    with pytest.raises(ValueError, match='one padding node'):
        pad_batch(batch, nodes, edges)  # no room for the padding graph
    with pytest.raises(ValueError, match='budget too small'):
        pad_batch(batch, nodes + 1, edges - 1)


def test_padded_loader_rounds_up_to_few_shapes():
    graphs = molecules(200)
    loader = PaddedLoader(DeviceGraphLoader(graphs, 16, shuffle=True,
                                            generator=torch.Generator()
                                            .manual_seed(0)),
                          node_step=64, edge_step=128)
    shapes, count = set(), 0
    for batch in loader:
        n, e = batch.x.size(0), batch.edge_index.size(1)
        assert n % 64 == 0 and e % 128 == 0
        assert batch.node_mask.sum() < n  # at least one padding node
        shapes.add((n, e))
        count += 1
    assert count == len(loader) == 13
    assert len(shapes) < count  # batches share shapes
    with pytest.raises(ValueError, match='positive'):
        PaddedLoader(loader.loader, node_step=0)


def masked_batch_norm(bn, x, mask):
    # The BatchNorm a module's own forward runs on a padded batch: the
    # seed-stacked one as a group of one, its real rows a mask.
    return seed_batch_norm(x.unsqueeze(0), stacked_state(bn), '', bn,
                           mask.view(1, -1), bn.training).squeeze(0)


@pytest.mark.parametrize('momentum', [0.1, None])
def test_masked_batch_norm_equals_batch_norm_on_real_rows(momentum):
    x = torch.randn(10, 4)
    mask = torch.tensor([True] * 7 + [False] * 3)
    ref = nn.BatchNorm1d(4, momentum=momentum)
    ours = nn.BatchNorm1d(4, momentum=momentum)
    for _ in range(2):
        expected = ref(x[:7])
        out = masked_batch_norm(ours, x, mask)
        torch.testing.assert_close(out[:7], expected)
        assert torch.equal(out[7:], torch.zeros(3, 4))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked == ref.num_batches_tracked == 2
    ours.eval(), ref.eval()
    torch.testing.assert_close(masked_batch_norm(ours, x, mask), ref(x))


@pytest.mark.parametrize('momentum', [0.1, None])
def test_seed_batch_norm_of_listed_rows_equals_batch_norm(momentum):
    # The unpadded form (real rows a list), as a module on its own runs it.
    x = torch.randn(2, 9, 4)
    ref = [nn.BatchNorm1d(4, momentum=momentum) for _ in range(2)]
    ours = nn.BatchNorm1d(4, momentum=momentum)
    P = {k: torch.stack([v, v.clone()]) for k, v in
         stacked_state(ours).items()}
    P = {k: v.squeeze(1) for k, v in P.items()}
    for _ in range(3):
        out = seed_batch_norm(x, P, '', ours, [9, 6], True)
        torch.testing.assert_close(out[0], ref[0](x[0]))
        torch.testing.assert_close(out[1, :6], ref[1](x[1, :6]))
    for s in range(2):
        torch.testing.assert_close(P['running_mean'][s], ref[s].running_mean)
        torch.testing.assert_close(P['running_var'][s], ref[s].running_var)


CASES = [  # backbone, backbone kwargs, graphs, task
    ('gin', dict(hidden_channels=16, num_layers=3, atom_encoder=True,
                 bond_encoder=True), molecules, 'bce'),
    ('gin-v', dict(hidden_channels=16, num_layers=3, atom_encoder=True,
                   bond_encoder=True), molecules, 'bce'),
    ('gcn', dict(hidden_channels=16, num_layers=3, pooling='mean'),
     featured_graphs, 'ce'),
    ('gin', dict(hidden_channels=16, num_layers=2, pooling='max'),
     featured_graphs, 'ce'),
]


def _loss(out, y, task):
    if task == 'bce':
        return F.binary_cross_entropy_with_logits(out, y.float())
    return F.cross_entropy(out, y.view(-1))


@pytest.mark.parametrize('method', ['erm', 'hma'])
@pytest.mark.parametrize('backbone,kwargs,make,task', CASES)
def test_padded_training_equals_unpadded(backbone, kwargs, make, task,
                                         method):
    graphs = make(48)
    num_classes = 2 if task == 'bce' else 3
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(
            backbone, method, num_classes=num_classes, num_features=5,
            out_channels=1 if task == 'bce' else None,
            backbone_kwargs=dict(kwargs, dropout=0.0),
            hma_kwargs=None if method == 'erm' else dict(
                memory_size=20, slots_per_class=2, label_dim=4, heads=2,
                dropout=0.0)))
    plain, padded = models
    assert padded.encoder.supports_padding
    # SGD, not Adam: a bias right before a BatchNorm has a zero gradient up
    # to rounding, which Adam would blow up to steps of size lr.
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    loader = DataLoader(graphs, batch_size=12, shuffle=False)
    for step, batch in enumerate(loader):  # 4 steps: the queue wraps around
        nodes, edges = batch_sizes(batch)
        pbatch = pad_batch(batch, nodes + 9, edges + 13)
        y = batch.y.view(-1).long()
        losses = []
        for model, opt, data in ((plain, opts[0], batch),
                                 (padded, opts[1], pbatch)):
            opt.zero_grad()
            out = model(data, y=y)
            assert out.shape[0] == 12
            loss = _loss(out, data.y, task)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5,
                                   atol=1e-6)
    for (name, a), b in zip(plain.state_dict().items(),
                            padded.state_dict().values()):
        # Parameters after 4 steps, BatchNorm running statistics and
        # HMA's queue (momentum keys written from padded batches).
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    for model in models:
        model.eval()
    with torch.no_grad():
        batch = next(iter(loader))
        nodes, edges = batch_sizes(batch)
        torch.testing.assert_close(
            padded(pad_batch(batch, nodes + 3, edges)), plain(batch),
            rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('conv,layers', [('gcn', 1), ('gin', 2)])
def test_compiled_padded_backbone_gradients_match_eager(conv, layers):
    # torch.compile of a padded GNN: masked BatchNorm written as
    # `(x * mask).sum(0)` made Inductor (torch 2.13, CPU) produce wrong
    # backbone gradients with PyG's message passing (a one-layer GCN showed
    # it); the matrix-vector form is right. Eager and compiled must agree.
    graphs = featured_graphs(16)
    batch = Batch.from_data_list(graphs)
    nodes, edges = batch_sizes(batch)
    padded = pad_batch(batch, 256, 512)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(conv, 'erm', num_classes=3,
                                  num_features=5,
                                  backbone_kwargs=dict(hidden_channels=32,
                                                       num_layers=layers,
                                                       dropout=0.0)))
    torch._dynamo.reset()
    compiled = torch.compile(models[1])
    for fn in (models[0], compiled):
        F.cross_entropy(fn(padded), padded.y).backward()
    scale = max(float(p.grad.abs().max()) for p in models[0].parameters())
    for (name, a), b in zip(models[0].named_parameters(),
                            models[1].parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4,
                                   atol=1e-5 * scale, msg=name)


def test_compiled_padded_model_follows_changing_graph_counts():
    # The last batch of an epoch has fewer graphs: after the recompile that
    # makes the number of graphs symbolic, the compiled padded model must
    # still trace (torch 2.11 failed on `num_graphs + bool`) and match eager.
    torch.manual_seed(0)
    model = build_model('gcn', 'erm', num_classes=3, num_features=5,
                        backbone_kwargs=dict(hidden_channels=16, num_layers=1,
                                             dropout=0.0)).eval()
    torch._dynamo.reset()
    compiled = torch.compile(model)
    graphs = featured_graphs(40)
    with torch.no_grad():
        for start, count in [(0, 16), (16, 16), (32, 5), (0, 7)]:
            batch = pad_batch(
                Batch.from_data_list(graphs[start:start + count]), 256, 512)
            torch.testing.assert_close(compiled(batch), model(batch),
                                       rtol=1e-4, atol=1e-5)
            assert compiled(batch).shape == (count, 3)


@pytest.mark.parametrize('method', ['erm', 'hma'])
def test_static_path_trains_like_eager_on_device(method, test_device):
    # What benchmarks/speed.py's `static` path runs (padded device batches,
    # the whole model compiled: CUDA graphs on a GPU) trains like the eager
    # `fast` path: the engine's step from the same weights on the same
    # batches, without dropout (whose draws would cover the padding too).
    # Over the first steps only float rounding separates them (on a CPU
    # ~1e-5; a missed queue write, BatchNorm update or wrong gradient shows
    # as 1e-2); Adam slowly amplifies rounding (and atomic-add order).
    from pyg_hma.methods import METHODS, Criterion, StepContext
    from pyg_hma.train.engine import compile_model, fused_adam, train_step
    graphs = featured_graphs(96)
    compiled = 'reduce-overhead' if test_device.type == 'cuda' else 'default'
    losses = []
    for mode in (None, compiled):
        torch.manual_seed(0)
        model = build_model(
            'gcn', method, num_classes=3, num_features=5,
            backbone_kwargs=dict(hidden_channels=32, num_layers=3,
                                 dropout=0.0, pooling='mean'),
            hma_kwargs=dict(memory_size=32, slots_per_class=4, label_dim=8,
                            dropout=0.0, check_inputs=False)
        ).to(test_device)
        loader = DeviceGraphLoader(graphs, 16, shuffle=True,
                                   device=test_device,
                                   generator=torch.Generator().manual_seed(0))
        if mode is not None:
            torch._dynamo.reset()
            compile_model(model, mode)
            loader = PaddedLoader(loader, 256, 512)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = fused_adam(params, lr=1e-3)
        steps = [train_step(model, batch, METHODS[method].objective,
                            Criterion('ce'), StepContext(1), optimizer,
                            params, 1.0, mark_step=mode is not None)[0]
                 .detach().clone() for batch in loader]
        losses.append(torch.stack(steps).double().cpu())
    eager, static = losses
    assert eager.numel() == 6
    diff = (static - eager).abs() / eager.abs().clamp(min=1e-6)
    assert float(diff[:5].max()) <= (1e-4 if test_device.type == 'cpu'
                                     else 1e-3), diff
    assert float(diff.max()) <= 5e-3, diff
