"""docs/extending.md: a new method, backbone and dataset are one registry
entry each, and the runner's command line, result files and report pick
them up."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import SAGEConv, global_mean_pool

from conftest import runner_module
from pyg_hma.data import DATASETS, DatasetSpec, DatasetSplits, find_mirror
from pyg_hma.methods import METHODS, MethodSpec, Objective, method_label
from pyg_hma.models import BACKBONES, BackboneSpec, StackedEncoder, build_model
from pyg_hma.nn.stacked import linear
from pyg_hma.registry import UnknownNameError
from pyg_hma.study.tables import report_markdown
from pyg_hma.train.results import find_results


class LabelSmoothing(Objective):
    def __call__(self, model, batch, crit, ctx):
        logits = model(batch, y=crit.tokens(batch.y))
        loss = F.cross_entropy(logits, batch.y.view(-1), label_smoothing=0.1)
        return loss, logits, {}


class SAGE(nn.Module):
    def __init__(self, in_channels, hidden_channels=32, dropout=0.0):
        super().__init__()
        self.conv = SAGEConv(in_channels, hidden_channels)
        self.out_channels = hidden_channels

    def forward(self, batch):
        h = self.conv(batch.x, batch.edge_index).relu()
        return global_mean_pool(h, batch.batch, size=batch.num_graphs)


def load_my_graphs(name, root=None, mirror=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(40):
        n = 4 + i % 5
        ring = torch.arange(n)
        edge_index = torch.stack([ring, (ring + 1) % n])
        graphs.append(Data(x=torch.rand(n, 8, generator=gen),
                           edge_index=torch.cat([edge_index,
                                                 edge_index.flip(0)], 1),
                           y=torch.tensor([i % 2])))
    return DatasetSplits(name=name, train=graphs[:24], val=graphs[24:32],
                         test=graphs[32:], num_features=8, num_classes=2,
                         metric='accuracy')


@pytest.fixture
def my_graphs():
    DATASETS.register(DatasetSpec('MyGraphs', load_my_graphs,
                                  metric='accuracy'))
    yield
    DATASETS.unregister('MyGraphs')


def test_a_new_dataset_reaches_the_runner(my_graphs, tmp_path, capsys,
                                          monkeypatch):
    from pyg_hma.data.__main__ import main as data_cli
    from pyg_hma.runners.protocols import ood as protocols
    assert data_cli(['list']) == 0
    assert 'MyGraphs' in capsys.readouterr().out.split()
    # The protocols are package data: the runner script reads them there.
    ood = runner_module('ood')
    monkeypatch.setitem(protocols.PROTOCOLS, 'MyGraphs',
                        protocols.TU.replace(table=None))
    argv = ['--dataset', 'MyGraphs', '--quiet', '--method', 'erm',
            '--seeds', '0-0', '--epochs', '2', '--out', str(tmp_path)]
    assert ood.main(argv) == 0
    rec = json.loads((tmp_path / 'MyGraphs/gcn/erm/seed0.json').read_text())
    assert rec['dataset'] == 'MyGraphs' and rec['metric'] == 'accuracy'
    with pytest.raises(UnknownNameError, match='choose one of .*MyGraphs'):
        DATASETS['MyGraph']


@pytest.fixture
def registered():
    METHODS.register(MethodSpec('erm-ls', 'ERM+LS', LabelSmoothing()))
    BACKBONES.register(BackboneSpec('sage', SAGE, 'SAGE'))
    yield
    METHODS.unregister('erm-ls')
    BACKBONES.unregister('sage')


def test_registries_refuse_unknown_and_duplicate_names(registered):
    with pytest.raises(UnknownNameError, match="choose one of .*erm-ls"):
        METHODS['erm-sl']
    with pytest.raises(ValueError, match='registered twice'):
        METHODS.register(MethodSpec('erm-ls', 'x', LabelSmoothing()))
    model = build_model('sage', 'hma', num_classes=2, num_features=3,
                        backbone_kwargs=dict(hidden_channels=16))
    assert model.readout.in_channels == 16
    assert method_label('erm-ls') == 'ERM+LS'


@pytest.mark.skipif(find_mirror() is None, reason='needs the data mirror')
def test_new_entries_reach_the_runner_and_the_report(registered, tmp_path):
    ood = runner_module('ood')
    argv = ['--dataset', 'PROTEINS', '--quick', '--quiet', '--method',
            'erm-ls', '--backbone', 'sage', '--seeds', '0-0', '--epochs', '2',
            '--set', 'backbone.hidden_channels=16', '--out', str(tmp_path),
            '--root', str(tmp_path.parent / 'pyg_hma_data')]
    assert ood.main(argv) == 0
    rec = json.loads((tmp_path / 'PROTEINS/sage/erm-ls/seed0.json')
                     .read_text())
    assert rec['method_label'] == 'ERM+LS' and rec['backbone_label'] == 'SAGE'
    assert rec['config']['backbone_kwargs'] == {'hidden_channels': 16,
                                                'dropout': 0.3}
    summary = (tmp_path / 'PROTEINS/sage/summary.md').read_text()
    assert '| ERM+LS | 1 |' in summary
    report = report_markdown([dict(r, quick=False)
                              for r in find_results([tmp_path])])
    assert '| SAGE | ERM+LS |' in report


class NodeMLP(StackedEncoder):
    # docs/extending.md's seed-stackable backbone: its math written once.
    def __init__(self, in_channels, hidden_channels=32, dropout=0.0):
        super().__init__()
        self.lin = nn.Linear(in_channels, hidden_channels)
        self.dropout, self.out_channels = dropout, hidden_channels

    def forward_stacked(self, P, pre, data, noise, training):
        S, N, B = data.S, data.size, data.B
        h = linear(data.x.view(S, N, -1), P[pre + 'lin.weight'],
                   P[pre + 'lin.bias'], data.rows).relu()
        if training:
            h = noise.dropout(h, self.dropout, data.rows)
        pooled = global_mean_pool(h.reshape(S * N, -1), data.batch,
                                  S * B + 1)
        return pooled[:S * B].view(S, B, -1)


def test_a_stacked_backbone_is_written_once_and_trains_in_groups():
    # Its inherited forward is forward_stacked on its own weights; the
    # seed-batched trainer takes it (no fallback) and a seed trains to the
    # same bits alone and in a group.
    from pyg_hma.train import TrainConfig
    from pyg_hma.train.seed_batch import fit_seeds
    from pyg_hma.train.stacked import unsupported_reason
    splits = load_my_graphs('MyGraphs')
    torch.manual_seed(0)
    backbone = NodeMLP(8, 16)
    batch = Batch.from_data_list(splits.train[:5])
    expected = global_mean_pool(backbone.lin(batch.x).relu(), batch.batch)
    torch.testing.assert_close(backbone(batch), expected)
    BACKBONES.register(BackboneSpec('node-mlp', NodeMLP, 'node MLP'))
    try:
        model_fn = lambda: build_model(  # noqa: E731
            'node-mlp', 'hma', num_classes=2, num_features=8,
            backbone_kwargs=dict(hidden_channels=16, dropout=0.3),
            hma_kwargs=dict(memory_size=8, check_inputs=False))
        assert unsupported_reason(model_fn()) is None
        assert unsupported_reason(build_model(
            'gcn', 'erm', num_classes=2, num_features=8)) is None
        cfg = TrainConfig(epochs=2, batch_size=8)
        alone = fit_seeds(model_fn, splits, 'hma', cfg, seeds=[1],
                          fallback='raise')[0]
        grouped = fit_seeds(model_fn, splits, 'hma', cfg, seeds=[0, 1, 2],
                            group_size=3, fallback='raise')[1]
    finally:
        BACKBONES.unregister('node-mlp')
    assert [h['train_loss'] for h in alone.history] == \
        [h['train_loss'] for h in grouped.history]
    for k in alone.best_state:
        assert torch.equal(alone.best_state[k], grouped.best_state[k]), k
    from pyg_hma.models import LinearClassifier
    assert unsupported_reason(LinearClassifier(SAGE(8, 16), 2)) == \
        'backbone SAGE'


class StackedLabelSmoothing(LabelSmoothing):
    # docs/extending.md: the objective's seed-batched form beside its own.
    def stacked(self, model, data, crit, ctx, noise):
        S, B = data.S, data.B
        logits = model(data, noise,
                       y=crit.tokens(data.y.view(S * B, -1)).view(S, B))
        loss = torch.stack([F.cross_entropy(logits[s], data.y[s].view(-1),
                                            label_smoothing=0.1)
                            for s in range(S)])
        return loss, logits, {}


def test_an_objective_trains_seed_batched_only_with_its_stacked_form():
    from pyg_hma.methods import IRM, ManifoldMixup, Objective
    from pyg_hma.train import TrainConfig
    from pyg_hma.train.seed_batch import fit_seeds
    assert Objective.stacks() and IRM.stacks() and ManifoldMixup.stacks()
    assert not LabelSmoothing.stacks()  # only __call__: one at a time
    assert StackedLabelSmoothing.stacks()
    METHODS.register(MethodSpec('erm-sls', 'ERM+LS', StackedLabelSmoothing()))
    try:
        splits = load_my_graphs('MyGraphs')
        model_fn = lambda: build_model(  # noqa: E731
            'gcn', 'erm-sls', num_classes=2, num_features=8,
            backbone_kwargs=dict(hidden_channels=16, num_layers=2,
                                 dropout=0.0))
        cfg = TrainConfig(epochs=2, batch_size=8)
        grouped = fit_seeds(model_fn, splits, 'erm-sls', cfg, seeds=[0, 1],
                            group_size=2, fallback='raise')
        alone = fit_seeds(model_fn, splits, 'erm-sls', cfg, seeds=[1],
                          fallback='raise')[0]
    finally:
        METHODS.unregister('erm-sls')
    assert [h['train_loss'] for h in alone.history] == \
        [h['train_loss'] for h in grouped[1].history]
