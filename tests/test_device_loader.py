"""DeviceGraphLoader gives PyG's DataLoader batches, order and RNG draws."""
import json
import zipfile

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from pyg_hma.data import find_mirror, mirror_file
from pyg_hma.data.device_loader import DeviceGraphLoader
from pyg_hma.models import build_model


pytestmark = pytest.mark.usefixtures('one_thread')


def assert_same_batch(ours, ref):
    """Every attribute, the batch vector, num_graphs and the slice/inc
    bookkeeping of two batches are identical."""
    assert type(ours).__name__ == type(ref).__name__
    assert sorted(ours.keys()) == sorted(ref.keys())
    for key in ref.keys():
        a, b = ours[key], ref[key]
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype, key
            assert torch.equal(a, b), key
        else:
            assert a == b, key
    assert isinstance(ours.num_graphs, int)
    assert ours.num_graphs == ref.num_graphs
    assert ours.num_nodes == ref.num_nodes
    assert ours._slice_dict.keys() == ref._slice_dict.keys()
    for key, value in ref._slice_dict.items():
        assert torch.equal(ours._slice_dict[key], value), key
    for key, value in ref._inc_dict.items():
        if value is None:
            assert ours._inc_dict[key] is None, key
        else:
            assert torch.equal(ours._inc_dict[key], value), key


@pytest.fixture(scope='module')
def proteins(tmp_path_factory):
    """PROTEINS (1113 graphs) as PyG's TUDataset reads it from the mirror."""
    if find_mirror() is None:
        pytest.skip('no offline data mirror (../shared/data) found')
    from torch_geometric.datasets import TUDataset
    root = tmp_path_factory.mktemp('tu')
    with zipfile.ZipFile(mirror_file('tu/PROTEINS.zip')) as zf:
        zf.extractall(root)
    (root / 'PROTEINS').rename(root / 'raw')
    (root / 'PROTEINS').mkdir()
    (root / 'raw').rename(root / 'PROTEINS' / 'raw')
    return TUDataset(str(root), 'PROTEINS')


def toy_graphs(num_graphs=23, seed=0):
    """Graphs with every kind of attribute the loader must batch: float node
    features, edge features, a 2-D graph label, an index attribute that PyG
    shifts by the node count, a scalar tensor, a number and a string; some
    graphs have no edges."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num_graphs):
        n = int(torch.randint(1, 9, (1, ), generator=gen))
        e = 0 if i % 5 == 3 else int(torch.randint(1, 15, (1, ),
                                                    generator=gen))
        graphs.append(Data(
            x=torch.randn(n, 4, generator=gen),
            edge_index=torch.randint(0, n, (2, e), generator=gen),
            edge_attr=torch.randint(0, 5, (e, 3), generator=gen),
            y=torch.rand(1, 2, generator=gen),
            anchor_index=torch.randint(0, n, (2, ), generator=gen),
            weight=torch.tensor(float(i)),
            env=i % 3,
            name=f'g{i}',
        ))
    return graphs


@pytest.mark.parametrize('packed', [False, True])
def test_matches_from_data_list_on_any_order(packed):
    graphs = toy_graphs()
    loader = DeviceGraphLoader(graphs, batch_size=4)
    # Off the CPU the index arrays travel packed in one buffer; exercise
    # that path here too (without pinning, which needs CUDA).
    loader._pack = packed
    for index in ([0, 1, 2], [22, 3, 3, 0, 8], [5], list(range(23))[::-1]):
        ours = loader.collate(torch.tensor(index))
        ref = Batch.from_data_list([graphs[i] for i in index])
        assert_same_batch(ours, ref)
        # PyG takes our batch apart into the graphs it gets from its own.
        got, want = ours.to_data_list(), ref.to_data_list()
        assert len(got) == len(want) == len(index)
        for a, b in zip(got, want):
            assert a.keys() == b.keys()
            for key in b.keys():
                assert torch.equal(a[key], b[key]) \
                    if isinstance(b[key], torch.Tensor) else a[key] == b[key]
        assert torch.equal(got[0].edge_index, graphs[index[0]].edge_index)


@pytest.mark.parametrize('drop_last', [False, True])
def test_same_batches_and_rng_as_pyg_loader_with_generator(drop_last):
    graphs = toy_graphs()  # 23 graphs: a last partial batch of 3
    ours = DeviceGraphLoader(graphs, batch_size=5, shuffle=True,
                             drop_last=drop_last,
                             generator=torch.Generator().manual_seed(7))
    ref = DataLoader(graphs, batch_size=5, shuffle=True, drop_last=drop_last,
                     generator=torch.Generator().manual_seed(7))
    assert len(ours) == len(ref) == (4 if drop_last else 5)
    orders = []
    for _ in range(3):  # each epoch reshuffles, in the same way
        got, want = list(ours), list(ref)
        assert len(got) == len(want) == len(ours)
        for a, b in zip(got, want):
            assert_same_batch(a, b)
        orders.append(torch.cat([b.weight for b in got]))
    assert not torch.equal(orders[0], orders[1])
    assert torch.equal(ours.generator.get_state(), ref.generator.get_state())


def test_same_batches_and_global_rng_as_pyg_loader():
    graphs = toy_graphs(20)  # a multiple of the batch size: no partial batch
    ours = DeviceGraphLoader(graphs, batch_size=5, shuffle=True)
    ref = DataLoader(graphs, batch_size=5, shuffle=True)
    for shuffled in (ours, ref):
        torch.manual_seed(3)
        batches = [list(shuffled), list(shuffled)]
        after = torch.rand(3)  # the next draw of e.g. dropout
        if shuffled is ours:
            got, got_after = batches, after
    for epoch_got, epoch_want in zip(got, batches):
        for a, b in zip(epoch_got, epoch_want):
            assert_same_batch(a, b)
    assert torch.equal(got_after, after)


def test_unshuffled_order_and_partial_batch():
    graphs = toy_graphs(11)
    loader = DeviceGraphLoader(graphs, batch_size=4)
    batches = list(loader)
    assert [b.num_graphs for b in batches] == [4, 4, 3]
    assert torch.equal(torch.cat([b.weight for b in batches]),
                       torch.arange(11, dtype=torch.float))
    assert len(DeviceGraphLoader(graphs, 4, drop_last=True)) == 2
    assert [b.num_graphs for b in
            DeviceGraphLoader(graphs, 4, drop_last=True)] == [4, 4]
    assert len(DeviceGraphLoader(graphs, 20)) == 1


def test_proteins_epochs_equal_pyg(proteins):
    ours = DeviceGraphLoader(proteins, batch_size=64, shuffle=True,
                             generator=torch.Generator().manual_seed(0))
    ref = DataLoader(proteins, batch_size=64, shuffle=True,
                     generator=torch.Generator().manual_seed(0))
    assert len(ours) == len(ref) == 18  # 17 full batches and one of 25
    count = 0
    for a, b in zip(ours, ref):
        assert_same_batch(a, b)
        count += b.num_graphs
    assert count == len(proteins) == 1113


def test_input_errors():
    graphs = toy_graphs(4)
    with pytest.raises(ValueError, match='empty dataset'):
        DeviceGraphLoader([], batch_size=2)
    with pytest.raises(ValueError, match='batch_size'):
        DeviceGraphLoader(graphs, batch_size=0)
    odd = graphs[:2] + [Data(x=torch.randn(3, 4),
                             edge_index=torch.zeros(2, 0, dtype=torch.long))]
    with pytest.raises(ValueError, match='Graph 2 has attributes'):
        DeviceGraphLoader(odd, batch_size=2)
    wrong = [Data(x=torch.randn(3, 4)), Data(x=torch.randn(2, 5))]
    with pytest.raises(ValueError, match="'x' cannot be concatenated"):
        DeviceGraphLoader(wrong, batch_size=2)
    with pytest.raises(TypeError, match="'Data' graphs"):
        DeviceGraphLoader([torch.zeros(3)], batch_size=2)
    loader = DeviceGraphLoader(graphs, batch_size=2)
    with pytest.raises(IndexError, match='out of range'):
        loader.collate([0, 4])


def train_losses(make_loader, dataset, method, epochs=2):
    """Per-step losses of a short seeded training run of the project's GIN
    with a linear head or HMA (dropout and HMA's momentum encoder and queue
    included, so the loaders must also leave the global RNG untouched)."""
    torch.manual_seed(0)
    model = build_model('gin', method, num_classes=2,
                        num_features=dataset.num_features,
                        backbone_kwargs=dict(hidden_channels=16,
                                             num_layers=2),
                        hma_kwargs=None if method == 'erm' else dict(
                            memory_size=24, slots_per_class=2, label_dim=8))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, foreach=True)
    loader = make_loader()
    losses = []
    for _ in range(epochs):
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(
                model(batch, y=batch.y), batch.y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return torch.stack(losses), model


@pytest.mark.parametrize('method', ['erm', 'hma'])
def test_training_losses_equal_pyg_loader(proteins, method):
    subset = proteins[:150]
    plain, plain_model = train_losses(
        lambda: DataLoader(subset, 32, shuffle=True), subset, method)
    fast, fast_model = train_losses(
        lambda: DeviceGraphLoader(subset, 32, shuffle=True), subset, method)
    assert plain.numel() == 2 * 5
    torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-7)
    if method == 'hma':  # same queue written by the momentum encoder
        torch.testing.assert_close(fast_model.readout.queue_keys,
                                   plain_model.readout.queue_keys)
        assert torch.equal(fast_model.readout.queue_labels,
                           plain_model.readout.queue_labels)


def _speed_module():
    """benchmarks/speed.py, imported once (it is a script, not a module)."""
    import importlib.util
    import sys
    from pathlib import Path
    name = 'pyg_hma_speed_benchmark'
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / 'benchmarks' / 'speed.py'
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize('features', ['long', 'onehot'])
def test_gpu_export_round_trip(features):
    speed = _speed_module()
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for n in (3, 1, 7):
        e = 2 * (n - 1)
        x = torch.randint(0, 5, (n, 9), generator=gen) if features == 'long' \
            else torch.nn.functional.one_hot(
                torch.randint(0, 6, (n, ), generator=gen), 6).float()
        graphs.append(Data(x=x, edge_index=torch.randint(0, n, (2, e),
                                                         generator=gen),
                           edge_attr=torch.randint(0, 3, (e, 3),
                                                   generator=gen),
                           y=torch.tensor([[n % 2]])))
    blob = speed._export_split(graphs, features)
    assert blob['edge_index'].dtype == torch.uint8  # stored compactly
    back = speed._import_split(blob, gen)
    assert len(back) == len(graphs)
    for a, b in zip(back, graphs):
        for key in ('x', 'edge_index', 'edge_attr', 'y'):
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key


def test_speed_benchmark_quick_report(tmp_path):
    speed = _speed_module()
    out = tmp_path / 'speed.json'
    report = speed.main(['--quick', '--synthetic', '--dataset', 'NCI1',
                         '--methods', 'erm', 'hma', '--out', str(out)])
    assert json.loads(out.read_text())['dataset'] == 'NCI1'
    assert report['batches_checked_equal'] == 3
    for path in ('pyg', 'fast'):
        erm, hma = (report['results'][path][m] for m in ('erm', 'hma'))
        assert hma['step_ratio'] == pytest.approx(hma['step_ms'] /
                                                  erm['step_ms'])
        assert hma['epoch_ratio'] == pytest.approx(hma['epoch_s'] /
                                                   erm['epoch_s'])
        assert set(hma['eval_graphs_per_s']) == {'batch', 'independent'}
        assert set(erm['eval_graphs_per_s']) == {'batch'}


def test_speed_benchmark_out_is_a_folder_like_the_runners(tmp_path):
    speed = _speed_module()
    speed.main(['--quick', '--synthetic', '--dataset', 'NCI1', '--methods',
                'erm', '--paths', 'fast', '--out', str(tmp_path)])
    report = json.loads((tmp_path / 'speed-NCI1-gcn.json').read_text())
    assert report['dataset'] == 'NCI1'
    assert torch.get_num_threads() == 1  # the runners' default
    a_file = tmp_path / 'notes'
    a_file.write_text('keep')
    for bad in (['--out', str(a_file)], ['--threads', '-1']):
        with pytest.raises(SystemExit):  # refused before the benchmark runs
            speed.main(['--quick', '--synthetic', '--dataset', 'NCI1', *bad])
    assert a_file.read_text() == 'keep'


def test_speed_check_static_passes_on_equal_training(tmp_path):
    # The static path (padded batches + torch.compile) trains like the fast
    # path; the check reports the loss differences and would exit otherwise.
    speed = _speed_module()
    report = speed.main(['--synthetic', '--dataset', 'NCI1', '--check-static',
                         '--steps', '6', '--max-graphs', '96',
                         '--batch-size', '16'])['check_static']
    for method in ('erm', 'hma'):
        assert report[method]['steps'] == 6
        assert report[method]['max_rel_diff_first_5'] <= 1e-4
        assert len(report[method]['first_losses']) == 3
