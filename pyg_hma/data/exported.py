r"""Exported splits: a dataset's splits as one file of plain tensors.

Processing some datasets needs packages that a training machine may lack
(OGB and RDKit for the molecules, spaCy and a sentence encoder for the text
graphs), and a machine without internet cannot download them. An exported
file holds the processed splits of one seed as plain tensors and metadata:
it loads with torch and PyG alone (``torch.load(weights_only=True)``, no
pickled classes), so such a machine can run the benchmark runners on it.

.. code-block:: bash

    # here, with the datasets (and ogb, RDKit) at hand
    python -m pyg_hma.data export --dataset ogbg-molbace --seeds 10 --out exp
    # on the other machine (copy exp/ along)
    python benchmarks/ogb_mol.py --dataset ogbg-molbace --exported exp

``load_dataset(name, seed=s, exported=DIR)`` (or ``$PYG_HMA_EXPORTED``)
reads ``DIR/NAME-seedS.pt`` and never imports the dataset's own loader.
Graph datasets only (every sample a ``Data`` with tensor attributes).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch_geometric.data import Data

from ..files import PathLike, atomic_path
from .cache import InMemoryGraphs, collate
from .mirror import MissingDataError
from .splits import DatasetSplits

EXPORT_FORMAT = 1
ENV_VAR = 'PYG_HMA_EXPORTED'


def compact_int(t: torch.Tensor) -> torch.Tensor:
    r""":obj:`t` in the smallest integer dtype that holds its values
    (floating-point tensors are returned as they are)."""
    if t.is_floating_point() or t.numel() == 0 or t.dtype == torch.bool:
        return t
    low, high = int(t.min()), int(t.max())
    for dtype in (torch.uint8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return t.to(dtype)
    return t


def _pack(t: torch.Tensor) -> Dict[str, Any]:
    # Lossless and small: integers (and floats that are small non-negative
    # integers, such as one-hot features) in the narrowest integer dtype.
    dtype = str(t.dtype).replace('torch.', '')
    if t.is_floating_point() and t.numel() and bool((t == t.round()).all()) \
            and float(t.min()) >= 0 and float(t.max()) <= 255:
        return {'value': t.to(torch.uint8), 'dtype': dtype}
    return {'value': compact_int(t), 'dtype': dtype}


def _unpack(packed: Dict[str, Any]) -> torch.Tensor:
    return packed['value'].to(getattr(torch, packed['dtype']))


def exported_file(folder: PathLike, name: str, seed: int) -> Path:
    return Path(folder) / f"{name.replace('/', '_')}-seed{seed}.pt"


def default_exported_dir() -> Optional[str]:
    return os.environ.get(ENV_VAR) or None


def _graph_split(split) -> List[Data]:
    graphs = []
    for i in range(len(split)):
        data = split[i]
        if not isinstance(data, Data):
            raise TypeError(f'Only graph datasets can be exported (sample {i} '
                            f'is a {type(data).__name__})')
        x = getattr(data, 'x', None)
        if 'num_nodes' in data and x is not None and \
                data.num_nodes == x.size(0):
            # OGB stores the node count beside `x`: redundant, and not a
            # tensor. (A count that `x` does not give is kept: an error.)
            data = data.clone()
            del data.num_nodes
        graphs.append(data)
        bad = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f'Graph {i} has non-tensor attributes {bad}: only '
                            f'tensor attributes can be exported')
    return graphs


def save_exported(splits: DatasetSplits, path: PathLike) -> Path:
    r"""Writes :obj:`splits` to :obj:`path` (atomically)."""
    parts: Dict[str, Any] = {}
    for key, split in [('train', splits.train), ('val', splits.val),
                       *((f'test/{k}', v) for k, v in splits.tests.items())]:
        graphs = _graph_split(split)
        if not graphs:
            raise ValueError(f"Split '{key}' of {splits.name} is empty")
        data, slices = collate(graphs)
        parts[key] = {'data': {k: _pack(v) for k, v in data.items()},
                      'slices': {k: compact_int(v)
                                 for k, v in slices.items()}}
    payload = {
        'format': EXPORT_FORMAT, 'name': splits.name,
        'num_features': splits.num_features,
        'num_classes': splits.num_classes, 'metric': splits.metric,
        'task': splits.task, 'num_edge_features': splits.num_edge_features,
        'test_is_dict': isinstance(splits.test, dict),
        # Statistics and provenance as JSON text (weights_only-safe).
        'info': json.dumps(splits.info, default=str),
        'splits': parts,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_exported(path: PathLike) -> DatasetSplits:
    r"""Reads a file written by :func:`save_exported`."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"No exported splits at '{path}'. Write them "
                               f"with: python -m pyg_hma.data export "
                               f"--dataset NAME --out {path.parent}")
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as error:  # truncated or foreign file
        raise ValueError(f"'{path}' is not a readable pyg_hma export "
                         f"({error})") from None
    if not isinstance(payload, dict) or \
            payload.get('format') != EXPORT_FORMAT:
        raise ValueError(f"'{path}' is not a pyg_hma export of format "
                         f"{EXPORT_FORMAT}")
    # Each split is collated graphs, as in a cache folder's data.pt.
    built = {key: InMemoryGraphs(
        Data.from_dict({k: _unpack(v) for k, v in part['data'].items()}),
        {k: v.long() for k, v in part['slices'].items()}, payload['name'])
        for key, part in payload['splits'].items()}
    tests = {key.split('/', 1)[1]: ds for key, ds in built.items()
             if key.startswith('test/')}
    info = json.loads(payload['info'])
    info['exported_from'] = str(path)
    return DatasetSplits(
        name=payload['name'], train=built['train'], val=built['val'],
        test=tests if payload['test_is_dict'] else tests['test'],
        num_features=payload['num_features'],
        num_classes=payload['num_classes'], metric=payload['metric'],
        task=payload['task'],
        num_edge_features=payload['num_edge_features'], info=info)
