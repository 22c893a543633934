"""Every layer's math is written once: a module's own forward is the
seed-stacked forward the seed-batched trainer runs, as a group of one. So a
seed's model gives the same bits on its own as inside a group of S."""
import copy

import pytest
import torch
from torch_geometric.data import Batch, Data

from pyg_hma.loader import TensorBatch
from pyg_hma.models import build_model
from pyg_hma.nn.stacked import Noise
from pyg_hma.train.stacked import StackedModel, union_of

from conftest import molecules

pytestmark = pytest.mark.usefixtures('one_thread')


def graphs(num, features=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num):
        n = 3 + i % 4
        edge_index = torch.randint(0, n, (2, 2 * n), generator=gen)
        out.append(Data(x=torch.randn(n, features, generator=gen),
                        edge_index=edge_index, y=torch.tensor([i % 2])))
    return out


def images(num, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return TensorBatch(x=torch.rand(num, 2, 14, 14, generator=gen),
                       y=torch.randint(0, 2, (num, ), generator=gen))


def case(backbone, method, dropout=0.5, **hma):
    # Three seeds' models and batches; dropout of the GNNs.
    if 'dropout_hma' in hma:
        hma['dropout'] = hma.pop('dropout_hma')
    kwargs = dict(num_classes=2,
                  hma_kwargs=dict(memory_size=8, check_inputs=False, **hma))
    if backbone in ('gin-v', 'gcn-v'):
        batches = [Batch.from_data_list(molecules(6, seed=s))
                   for s in range(3)]
        kwargs.update(num_features=9, backbone_kwargs=dict(
            hidden_channels=16, num_layers=2, atom_encoder=True,
            bond_encoder=True, dropout=dropout))
    elif backbone in ('mlp', 'cnn'):
        batches = [images(6, seed=s) for s in range(3)]
        kwargs.update(input_shape=(2, 14, 14))
    else:
        batches = [Batch.from_data_list(graphs(6, seed=s)) for s in range(3)]
        kwargs.update(num_features=5, backbone_kwargs=dict(
            hidden_channels=16, num_layers=2))
        if backbone != 'gin-gmixup':
            kwargs['backbone_kwargs']['dropout'] = dropout
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(backbone, method, **kwargs))
    return models, batches


@pytest.mark.parametrize('backbone,method,hma', [
    ('gin', 'erm', {}), ('gcn', 'hma', {}), ('gin-v', 'hma', {}),
    ('gcn-v', 'erm', {}), ('gin-gmixup', 'hma', {}), ('mlp', 'hma', {}),
    ('cnn', 'erm', {}), ('gcn', 'hma', dict(style='reference'))])
def test_a_module_is_its_stacked_forward_as_a_group_of_one(backbone, method,
                                                           hma):
    models, batches = case(backbone, method, **hma)
    for m in models:  # a written queue and trained statistics to read
        m.train()
        m(batches[0], **({} if method == 'erm' else
                         dict(y=batches[0].y.view(-1))))
        m.eval()
    stacked = StackedModel([copy.deepcopy(m) for m in models])
    stacked.train(False)
    noise = Noise([torch.Generator() for _ in models])
    with torch.no_grad():
        grouped = stacked(union_of(batches), noise)
        for s, (m, batch) in enumerate(zip(models, batches)):
            assert torch.equal(m(batch), grouped[s]), s


def test_a_module_trains_as_its_group_of_one():
    # Training mode, dropout off: a module's step is the stacked step of S=1
    # (the same logits, the same queue writes and BatchNorm statistics).
    models, batches = case('gcn', 'hma', dropout=0.0, dropout_hma=0.0)
    model = models[0].train()
    stacked = StackedModel([copy.deepcopy(model)])
    y = batches[0].y.view(-1)
    out = model(batches[0], y=y)
    grouped = stacked(union_of(batches[:1]), Noise([torch.Generator()]),
                      y=y.view(1, -1))
    assert torch.equal(out, grouped[0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, stacked.tensors[k][0]), k
