"""Backbones and build_model: batching correctness and the one head switch."""
import pytest
import torch
from torch_geometric.data import Batch, Data

from pyg_hma import HMAClassifier
from pyg_hma.methods import METHODS
from pyg_hma.models import (BACKBONES, LinearClassifier, build_backbone,
                            build_model)
from pyg_hma.models.encoders import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS
from pyg_hma.loader import TensorBatch

GNN_BACKBONES = ('gcn', 'gin', 'gcn-v', 'gin-v', 'gin-gmixup')


def random_graphs(num, num_features=5, seed=0, ogb=False):
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num):
        n = int(torch.randint(3, 9, (1, ), generator=gen))
        src = torch.randint(0, n, (2 * n, ), generator=gen)
        dst = torch.randint(0, n, (2 * n, ), generator=gen)
        edge_index = torch.cat([torch.stack([src, dst]),
                                torch.stack([dst, src])], dim=1)
        if ogb:
            x = torch.stack([torch.randint(0, d, (n, ), generator=gen)
                             for d in ATOM_FEATURE_DIMS], 1)
            e = torch.stack([torch.randint(0, d, (edge_index.size(1), ),
                                           generator=gen)
                             for d in BOND_FEATURE_DIMS], 1)
        else:
            x = torch.randn(n, num_features, generator=gen)
            e = None
        graphs.append(Data(x=x, edge_index=edge_index, edge_attr=e,
                           y=torch.tensor([0])))
    return graphs


def test_encoder_vocabularies_match_ogb():
    features = pytest.importorskip('ogb.utils.features')
    assert tuple(features.get_atom_feature_dims()) == ATOM_FEATURE_DIMS
    assert tuple(features.get_bond_feature_dims()) == BOND_FEATURE_DIMS


@pytest.mark.parametrize('name', GNN_BACKBONES)
def test_graph_embedding_does_not_depend_on_its_batch(name):
    # In eval mode a graph's embedding must be the same alone and inside a
    # batch: catches pooling/virtual-node bookkeeping across graphs.
    torch.manual_seed(0)
    kwargs = {} if name == 'gin-gmixup' else dict(hidden_channels=16,
                                                  num_layers=3)
    model = build_backbone(name, num_features=5, **kwargs).eval()
    graphs = random_graphs(6)
    together = model(Batch.from_data_list(graphs))
    assert together.shape == (6, model.out_channels)
    for i, g in enumerate(graphs):
        alone = model(Batch.from_data_list([g]))
        assert torch.allclose(alone[0], together[i], atol=1e-5)
    # A batch in another order gives the same rows in that order.
    perm = [3, 1, 5, 0, 2, 4]
    shuffled = model(Batch.from_data_list([graphs[i] for i in perm]))
    assert torch.allclose(shuffled, together[perm], atol=1e-5)


@pytest.mark.parametrize('name', ('gcn', 'gin', 'gcn-v', 'gin-v'))
def test_ogb_encoders_use_bond_features(name):
    torch.manual_seed(0)
    model = build_backbone(name, hidden_channels=16, num_layers=2,
                           atom_encoder=True, bond_encoder=True).eval()
    batch = Batch.from_data_list(random_graphs(4, ogb=True))
    out = model(batch)
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    changed = batch.clone()
    changed.edge_attr = (changed.edge_attr + 1) % torch.tensor(
        BOND_FEATURE_DIMS)
    assert not torch.allclose(model(changed), out)


def test_pooling_choice_matters():
    torch.manual_seed(0)
    mean = build_backbone('gin', num_features=5, hidden_channels=8,
                          num_layers=2, pooling='mean')
    torch.manual_seed(0)
    mx = build_backbone('gin', num_features=5, hidden_channels=8,
                        num_layers=2, pooling='max')
    batch = Batch.from_data_list(random_graphs(3))
    a, b = mean.eval()(batch), mx.eval()(batch)
    assert (b >= a - 1e-6).all() and not torch.allclose(a, b)


@pytest.mark.parametrize('name,shape', [('mlp', (2, 14, 14)),
                                        ('cnn', (2, 28, 28))])
def test_image_backbones(name, shape):
    model = build_model(name, 'hma', num_classes=2, input_shape=shape,
                        out_channels=1)
    batch = TensorBatch(torch.rand(5, *shape), torch.randint(0, 2, (5, )))
    model.train()
    out = model(batch, y=batch.y)
    assert out.shape == (5, 1)
    assert int((model.readout.queue_labels >= 0).sum()) == 5


def test_irm_mlp_initialisation():
    model = build_backbone('mlp', input_shape=(2, 14, 14))
    assert model.out_channels == 256
    for lin in (model.lin1, model.lin2):
        assert torch.count_nonzero(lin.bias) == 0
    assert model.lin1.in_features == 2 * 14 * 14


@pytest.mark.parametrize('method', list(METHODS))
def test_build_model_attaches_the_right_head(method):
    model = build_model('gcn', method, num_classes=3, num_features=5,
                        backbone_kwargs=dict(hidden_channels=12,
                                             num_layers=2))
    if not METHODS[method].uses_hma:
        assert isinstance(model, LinearClassifier)
        assert model.head.out_features == 3
    else:
        assert isinstance(model, HMAClassifier)
        readout = model.readout
        flags = dict(rma=readout.rma, abd=readout.abd,
                     synthetic=readout.synthetic)
        assert flags == METHODS[method].hma
        # The momentum copy exists exactly when there is a queue to write.
        assert (model.momentum_encoder is not None) == readout.rma
        # ...and is never trained by the optimizer.
        frozen = [p for p in model.parameters() if not p.requires_grad]
        assert bool(frozen) == readout.rma
    assert model.encoder.out_channels == 12
    batch = Batch.from_data_list(random_graphs(4))
    assert model.eval()(batch).shape == (4, 3)


def test_build_model_errors():
    with pytest.raises(ValueError, match="Unknown method 'hmaa'"):
        build_model('gcn', 'hmaa', num_classes=2, num_features=3)
    with pytest.raises(ValueError, match="Unknown backbone 'gat'"):
        build_model('gat', 'erm', num_classes=2, num_features=3)
    with pytest.raises(ValueError, match='may not set'):
        build_model('gcn', 'abd', num_classes=2, num_features=3,
                    hma_kwargs=dict(rma=True))
    with pytest.raises(ValueError, match='fixes'):
        build_backbone('gcn-v', num_features=3, virtual_node=False)
    with pytest.raises(ValueError, match='input_shape'):
        build_backbone('cnn')
    with pytest.raises(ValueError, match='pooling'):
        build_backbone('gin', num_features=3, pooling='median')
    assert set(BACKBONES) >= set(GNN_BACKBONES)


def _per_layer_gcn(gnn, data):
    # GNN.forward with every GCN layer computing its own normalisation (the
    # code before the normalisation was shared).
    from torch_geometric.nn import global_mean_pool
    h = gnn.node_encoder(data.x)
    for i in range(gnn.num_layers):
        h = gnn.convs[i](h, data.edge_index)
        h = gnn.norms[i](h)
        if i < gnn.num_layers - 1:
            h = torch.relu(h)
    return global_mean_pool(h, data.batch, int(data.num_graphs))


def test_shared_gcn_norm_equals_per_layer_norm():
    from pyg_hma.models import gnn as gnn_module
    torch.manual_seed(0)
    model = build_backbone('gcn', num_features=5, hidden_channels=16, num_layers=3,
                           dropout=0.0).eval()
    data = Batch.from_data_list(random_graphs(6))
    out = model(data)
    assert torch.equal(out, _per_layer_gcn(model, data))
    deg, norm = gnn_module.shared_gcn_norm(data.edge_index, data.num_nodes,
                                           torch.float)
    ref_deg, ref_norm = gnn_module.gcn_norm(data.edge_index, data.num_nodes,
                                            torch.float)
    assert torch.equal(deg, ref_deg) and torch.equal(norm, ref_norm)
    # Same tensor, same size: the cached pair; any change recomputes it.
    assert gnn_module.shared_gcn_norm(data.edge_index, data.num_nodes,
                                      torch.float)[1] is norm
    assert gnn_module.shared_gcn_norm(data.edge_index.clone(),
                                      data.num_nodes, torch.float)[1] \
        is not norm
    assert gnn_module.shared_gcn_norm(data.edge_index, data.num_nodes,
                                      torch.double)[1].dtype == torch.double
    edge_index = data.edge_index.clone()
    first = gnn_module.shared_gcn_norm(edge_index, data.num_nodes,
                                       torch.float)
    edge_index[0, 0] = (edge_index[0, 0] + 1) % data.num_nodes  # in place
    again = gnn_module.shared_gcn_norm(edge_index, data.num_nodes,
                                       torch.float)
    assert again[1] is not first[1]
    assert torch.equal(again[0], gnn_module.gcn_norm(
        edge_index, data.num_nodes, torch.float)[0])
    data.edge_index = edge_index
    assert torch.equal(model(data), _per_layer_gcn(model, data))


def test_gcn_in_inference_mode_then_training():
    # A result computed in inference mode is never cached: it could not be
    # saved for the backward pass of a later training step.
    torch.manual_seed(0)
    model = build_backbone('gcn', num_features=5, hidden_channels=16, num_layers=2)
    data = Batch.from_data_list(random_graphs(4))
    model.eval()
    with torch.inference_mode():
        expected = model(data)
    assert torch.equal(model(data), expected)
    model.train()
    model(data).sum().backward()  # would fail on an inference tensor
    assert model.convs[0].linear.weight.grad is not None


def test_momentum_encoder_shares_the_gcn_norm_of_its_batch():
    import copy
    torch.manual_seed(0)
    model = build_model('gcn', 'hma', num_classes=2, num_features=5,
                        backbone_kwargs=dict(hidden_channels=16,
                                             num_layers=2, dropout=0.0),
                        hma_kwargs=dict(memory_size=8, check_inputs=False))
    data = Batch.from_data_list(random_graphs(4))
    model.train()
    model(data, y=data.y.view(-1))
    # The keys written are the momentum copy's embeddings of the batch, as
    # if each of its layers had computed the normalisation itself.
    key_encoder = copy.deepcopy(model.momentum_encoder.module).train()
    with torch.no_grad():
        expected = _per_layer_gcn(key_encoder, data)
    assert torch.equal(model.readout.queue_keys[:4], expected)


def test_csr_of_an_index_in_order_is_that_of_a_stable_sort():
    # _csr skips the sort when the index is already in order (sources of
    # coalesced graphs); the matrix is bitwise the one the sort gives, with
    # duplicates and empty rows, and a shuffled index still sorts.
    from pyg_hma.models.union import _csr
    gen = torch.Generator().manual_seed(0)
    index = torch.sort(torch.randint(0, 50, (400, ), generator=gen))[0]
    other = torch.randint(0, 60, (400, ), generator=gen)
    values = torch.randn(400, generator=gen, dtype=torch.float64)

    def by_sort(index, other, values):
        order = torch.argsort(index, stable=True)
        crow = torch.cat([index.new_zeros(1), torch.cumsum(
            torch.bincount(index, minlength=60), 0)])
        return crow, other[order], values[order]
    for idx, oth, val in ((index, other, values),
                          (index.flip(0), other, values)):
        got = _csr(idx, oth, val, 60)
        crow, col, v = by_sort(idx, oth, val)
        assert torch.equal(got.crow_indices(), crow)
        assert torch.equal(got.col_indices(), col)
        assert torch.equal(got.values(), v)


@pytest.mark.parametrize('conv', ['gin', 'gcn'])
def test_sparse_neighbour_sum_equals_scatter(conv, monkeypatch):
    # On a CPU the layers without edge features sum their messages by a
    # sparse matrix product (models.union.neighbour_sum); the outputs and
    # gradients are those of PyG's gather and scatter.
    from torch_geometric.utils import scatter
    from pyg_hma.models import union as union_module
    from pyg_hma.models.gnn import GNN
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n in (5, 1, 8):
        ei = torch.randint(0, n, (2, 3 * n), generator=gen)
        graphs.append(Data(x=torch.randn(n, 4, generator=gen,
                                         dtype=torch.float64),
                           edge_index=ei))
    batch = Batch.from_data_list(graphs)

    def run():
        torch.manual_seed(0)
        model = GNN(4, hidden_channels=8, num_layers=3, conv=conv,
                    dropout=0.0).double()
        out = model(batch)
        grads = torch.autograd.grad(out.square().sum(),
                                    list(model.parameters()))
        return out, grads

    sparse_out, sparse_grads = run()

    def scattered(x, edge_index, weight=None):
        msg = x[edge_index[0]]
        if weight is not None:
            msg = weight.view(-1, 1) * msg
        return scatter(msg, edge_index[1], 0, dim_size=x.size(0),
                       reduce='sum')
    calls = []
    monkeypatch.setattr(union_module, 'neighbour_sum',
                        lambda *a: calls.append(1) or scattered(*a))
    out, grads = run()
    assert calls  # the layers did sum by the patched function
    torch.testing.assert_close(sparse_out, out, rtol=1e-12, atol=1e-12)
    for a, b in zip(sparse_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
