"""The PyG internals the loaders rely on (``pyg_hma/loader/_pyg_internals.py``)
agree with PyG's public API on the installed PyG version."""
import warnings

import pytest
import torch
import torch_geometric
from torch_geometric.data import Batch, Data, InMemoryDataset

from pyg_hma.loader import DeviceGraphLoader, pad_batch
from pyg_hma.loader._pyg_internals import (CHECKED_PYG_VERSIONS, batch_store,
                                           copy_with_own_store, empty_batch,
                                           in_memory_data, inc_dict,
                                           set_collation,
                                           set_num_nodes_per_graph,
                                           slice_dict)


def test_installed_pyg_version_was_checked():
    version = torch_geometric.__version__.split('+')[0]
    if version not in CHECKED_PYG_VERSIONS:
        pytest.skip(
            f"torch_geometric {version} is not one of the versions "
            f"pyg_hma/loader/_pyg_internals.py was checked against "
            f"({', '.join(CHECKED_PYG_VERSIONS)}): the other tests of "
            f"tests/test_pyg_internals.py say whether its functions still "
            f"hold; if they pass, add {version} to CHECKED_PYG_VERSIONS")


class LabelledGraph(Data):
    """A Data subclass: batches of it get their own Batch class."""


def make_graphs(cls=Data, num_nodes_key=False):
    """Four small graphs of different sizes (x, edge_index, edge_attr, y)."""
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for i, n in enumerate([3, 5, 2, 4]):
        num_edges = 2 * n
        graph = cls(x=torch.randn(n, 3, generator=gen),
                    edge_index=torch.randint(n, (2, num_edges),
                                             generator=gen),
                    edge_attr=torch.randn(num_edges, 2, generator=gen),
                    y=torch.tensor([i % 2]))
        if num_nodes_key:
            del graph.x
            graph.num_nodes = n
        graphs.append(graph)
    return graphs


def fast_batch(graphs, index):
    """The internal fast path: DeviceGraphLoader's gather."""
    return DeviceGraphLoader(graphs, batch_size=2, shuffle=False).collate(
        index)


def assert_same_graph(a, b):
    assert sorted(a.keys()) == sorted(b.keys())
    for key in b.keys():
        if isinstance(b[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    assert a.num_nodes == b.num_nodes


@pytest.mark.parametrize('cls', [Data, LabelledGraph])
def test_empty_batch_has_the_class_from_data_list_gives(cls):
    ref = Batch.from_data_list(make_graphs(cls))
    out = empty_batch(cls)
    assert type(out) is type(ref)
    assert isinstance(out, cls) and len(out.keys()) == 0


def test_batch_store_is_the_public_store():
    batch = Batch.from_data_list(make_graphs())
    store = batch_store(batch)
    assert store is batch.stores[0]
    store['extra'] = torch.ones(1)  # written through, read back publicly
    assert torch.equal(batch.extra, torch.ones(1))


def test_copy_with_own_store_shares_tensors_and_isolates_writes():
    batch = Batch.from_data_list(make_graphs())
    out = copy_with_own_store(batch)
    assert type(out) is type(batch) and out.num_graphs == batch.num_graphs
    for key in batch.keys():
        assert out[key] is batch[key], key
    batch_store(out)['x'] = torch.zeros(1)
    batch_store(out)['node_mask'] = torch.ones(1, dtype=torch.bool)
    assert batch.x.shape == (14, 3) and 'node_mask' not in batch.keys()
    assert torch.equal(out.x, torch.zeros(1))


def test_slice_and_inc_dict_match_the_public_offsets():
    graphs = make_graphs()
    batch = Batch.from_data_list(graphs)
    slices, incs = slice_dict(batch), inc_dict(batch)
    edge_ptr = torch.tensor([0] + [g.num_edges for g in graphs]).cumsum(0)
    assert torch.equal(slices['x'], batch.ptr)
    assert torch.equal(slices['edge_index'], edge_ptr)
    assert torch.equal(slices['edge_attr'], edge_ptr)
    assert torch.equal(slices['y'], torch.arange(len(graphs) + 1))
    assert torch.equal(incs['edge_index'].view(-1), batch.ptr[:-1])
    assert not incs['x'].any() and not incs['y'].any()
    # Not collated: no tables.
    assert slice_dict(Data(x=torch.ones(2, 1))) is None
    assert inc_dict(Data(x=torch.ones(2, 1))) is None


@pytest.mark.parametrize('num_nodes_key', [False, True])
def test_fast_batch_equals_from_data_list(num_nodes_key):
    """The batch DeviceGraphLoader assembles with empty_batch, batch_store,
    set_num_nodes_per_graph and set_collation behaves as PyG's own under the
    public methods that read those internals."""
    graphs = make_graphs(num_nodes_key=num_nodes_key)
    index = [2, 0, 3]
    ours = fast_batch(graphs, index)
    ref = Batch.from_data_list([graphs[i] for i in index])
    assert type(ours) is type(ref)
    assert ours.num_graphs == ref.num_graphs == 3
    assert_same_graph(ours, ref)
    for key in slice_dict(ref):
        assert torch.equal(slice_dict(ours)[key], slice_dict(ref)[key]), key
    for a, b in zip(ours.to_data_list(), [graphs[i] for i in index]):
        assert_same_graph(a, b)  # separates with _slice_dict, _inc_dict,
    for a, b in zip(ours.index_select([2, 0]), [graphs[3], graphs[2]]):
        assert_same_graph(a, b)  # ... and the stored _num_nodes


def test_set_collation_and_num_nodes_per_graph_by_hand():
    """Tables written by hand are the ones PyG's public methods read."""
    graphs = make_graphs(num_nodes_key=True)[:2]
    ref = Batch.from_data_list(graphs)
    out = empty_batch(Data)
    store = batch_store(out)
    for key in ref.keys():
        store[key] = ref[key]
    set_num_nodes_per_graph(store, [g.num_nodes for g in graphs])
    set_collation(out, 2, slice_dict(ref), inc_dict(ref))
    assert out.num_graphs == 2
    for a, b in zip(out.to_data_list(), graphs):
        assert_same_graph(a, b)


def test_pad_batch_leaves_the_original_batch_intact():
    graphs = make_graphs()
    batch = Batch.from_data_list(graphs)
    padded = pad_batch(batch, batch.num_nodes + 3, batch.num_edges + 4)
    assert padded.x.size(0) == batch.num_nodes + 3
    assert_same_graph(batch, Batch.from_data_list(graphs))


class InMemoryGraphs(InMemoryDataset):
    def __init__(self, graphs):
        super().__init__(None)
        self.data, self.slices = self.collate(graphs)


def test_in_memory_data_is_the_public_data():
    graphs = make_graphs()
    dataset = InMemoryGraphs(graphs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the property warns, by design
        public = dataset.data
    assert in_memory_data(dataset) is public
    assert torch.equal(in_memory_data(dataset).y,
                       torch.cat([g.y for g in graphs]))
