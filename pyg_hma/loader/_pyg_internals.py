r"""Every access of :mod:`pyg_hma` to private attributes of PyG objects.

The fast loaders build and edit :class:`~torch_geometric.data.Batch` objects
without going through :meth:`Batch.from_data_list`, so they read and write
attributes PyG does not document: the batch's storage (``_store``), the
collation tables (``_slice_dict``, ``_inc_dict``, ``_num_graphs``) that
:meth:`Batch.get_example`, :meth:`Batch.index_select` and
:attr:`Batch.num_graphs` read, the per-graph node counts of a storage
(``_num_nodes``), the ``_base_cls`` argument of :class:`Batch` and an
:class:`~torch_geometric.data.InMemoryDataset`'s collated storage
(``_data``). Each access is one small function here, so that a PyG upgrade
that changes them breaks one module, and ``tests/test_pyg_internals.py``
checks each function against PyG's public equivalent.

Every function was checked against the PyG versions in
:obj:`CHECKED_PYG_VERSIONS` (``tests/test_pyg_internals.py`` passes on each
of them).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Type

from torch import Tensor
from torch_geometric.data import Batch, Data, InMemoryDataset
from torch_geometric.data.storage import BaseStorage

#: The PyG releases every function of this module was checked against (with
#: torch 2.13). PyG 2.3 is not among them: there :obj:`Data.keys` is a
#: property, which the loaders call as a method.
CHECKED_PYG_VERSIONS = ('2.4.0', '2.5.3', '2.6.1', '2.7.0', '2.8.0', '2.8.1')


def empty_batch(base_cls: Type[Data]) -> Batch:
    r"""An empty :class:`~torch_geometric.data.Batch` of the class that
    :meth:`Batch.from_data_list` gives graphs of class :obj:`base_cls`
    (``Batch(_base_cls=base_cls)``; checked against
    :obj:`CHECKED_PYG_VERSIONS`)."""
    return Batch(_base_cls=base_cls)


def batch_store(batch: Batch) -> BaseStorage:
    r"""The storage of :obj:`batch` (``batch._store``), whose items are the
    batch's attributes; writing to it skips PyG's attribute checks (checked
    against :obj:`CHECKED_PYG_VERSIONS`)."""
    return batch._store


def copy_with_own_store(batch: Batch) -> Batch:
    r"""A shallow copy of :obj:`batch` with its own copy of the storage, so
    that attributes set on the copy leave :obj:`batch` unchanged (tensors are
    shared; checked against :obj:`CHECKED_PYG_VERSIONS`)."""
    out = copy.copy(batch)
    out._store = copy.copy(batch._store)
    return out


def set_num_nodes_per_graph(store: BaseStorage, counts: List[int]) -> None:
    r"""Records the node count of each graph of a batch in its storage
    (``store._num_nodes``), as :func:`torch_geometric.data.collate.collate`
    does for graphs with a ``num_nodes`` attribute (checked against
    :obj:`CHECKED_PYG_VERSIONS`)."""
    store._num_nodes = counts


def slice_dict(batch: Batch) -> Optional[Dict[str, Any]]:
    r"""The slice table of :obj:`batch` (``batch._slice_dict``: per attribute,
    where each graph's rows start and end), or :obj:`None` for a batch that
    was not collated (checked against :obj:`CHECKED_PYG_VERSIONS`)."""
    return getattr(batch, '_slice_dict', None)


def inc_dict(batch: Batch) -> Optional[Dict[str, Any]]:
    r"""The increment table of :obj:`batch` (``batch._inc_dict``: per
    attribute, what was added to each graph's values, e.g. node offsets of
    ``edge_index``), or :obj:`None` for a batch that was not collated
    (checked against :obj:`CHECKED_PYG_VERSIONS`)."""
    return getattr(batch, '_inc_dict', None)


def set_collation(batch: Batch, num_graphs: int,
                  slices: Dict[str, Tensor],
                  incs: Dict[str, Optional[Tensor]]) -> None:
    r"""Marks :obj:`batch` as a collation of :obj:`num_graphs` graphs with the
    slice and increment tables :obj:`slices` and :obj:`incs`, as
    :meth:`Batch.from_data_list` does (``_num_graphs``, ``_slice_dict``,
    ``_inc_dict``; checked against :obj:`CHECKED_PYG_VERSIONS`)."""
    batch._num_graphs = num_graphs
    batch._slice_dict = slices
    batch._inc_dict = incs


def in_memory_data(dataset: InMemoryDataset) -> Data:
    r"""The collated storage of :obj:`dataset` (``dataset._data``: all graphs
    concatenated, sliced by ``dataset.slices``), read without the warning of
    the :obj:`dataset.data` property, which also drops the dataset's cache of
    separated graphs (checked against :obj:`CHECKED_PYG_VERSIONS`)."""
    return dataset._data
