r"""Reading an OGB molecule folder with ogb (:func:`open_ogb`,
:func:`open_checked`), around two pitfalls of ogb 1.3.6 on current PyTorch
(its ``input()`` prompt, its bare ``torch.load``) and with one error for a
folder that cannot be read. Used by :mod:`pyg_hma.data.ogb_mol`, which
builds and loads the folders."""
from __future__ import annotations

import contextlib
import pickle
import zlib
from pathlib import Path
from typing import Iterator, Optional

from ..files import PathLike, UnreadableFileError
from .cache import remove_pyg_side_files

#: The file ogb's ``PygGraphPropPredDataset`` looks for in a dataset folder
#: (without it, ogb asks on stdin whether to delete the folder).
RELEASE_FILE = 'RELEASE_v1.txt'


def ogb_folder(name: str, root: PathLike) -> Path:
    r"""The folder of dataset :obj:`name` under :obj:`root`: the name ogb
    derives from the dataset name (``ogbg-molhiv`` -> ``ogbg_molhiv``)."""
    return Path(root) / name.replace('-', '_')


@contextlib.contextmanager
def allow_pyg_unpickling() -> Iterator[None]:
    """Lets ogb's bare ``torch.load`` read PyG's processed file.

    ogb 1.3.6 loads ``processed/geometric_data_processed.pt`` (a pickled
    ``(Data, slices)`` tuple) with ``torch.load(path)``. Since PyTorch 2.6
    that means ``weights_only=True``, which refuses every class that is not
    allow-listed; PyG allow-lists ``Data`` but not the three classes a
    ``Data`` pickles into (its ``GlobalStorage`` and the ``DataEdgeAttr`` /
    ``DataTensorAttr`` of its feature-store interface). They only hold
    tensors and dictionaries and are allow-listed for the duration of the
    call; ``weights_only`` stays on, so no arbitrary code can be unpickled.
    """
    import torch

    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5
        yield
        return
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage
    with torch.serialization.safe_globals(
            [GlobalStorage, DataEdgeAttr, DataTensorAttr]):
        yield


@contextlib.contextmanager
def no_prompt() -> Iterator[None]:
    """Makes ogb's ``input()`` (its "update the dataset?" question) an
    error instead of a wait on stdin."""
    from ogb.graphproppred import dataset_pyg

    def refuse(prompt=''):
        raise UnreadableFileError(
            f'ogb asked on stdin: {str(prompt).strip()!r}; its dataset '
            f'folder lacks {RELEASE_FILE}')
    dataset_pyg.input = refuse  # the module's name, before the builtin
    try:
        yield
    finally:
        del dataset_pyg.input


def open_ogb(name: str, root: PathLike):
    """``PygGraphPropPredDataset(name, root)`` without its two pitfalls.

    Raises:
        UnreadableFileError: the folder ogb would read lacks
            ``RELEASE_v1.txt`` (ogb would ask on stdin whether to delete
            it).
    """
    from ogb.graphproppred import PygGraphPropPredDataset

    folder = ogb_folder(name, root)
    # ogb reads NAME_pyg/ (an older download) when there is one.
    used = Path(f'{folder}_pyg') if Path(f'{folder}_pyg').is_dir() \
        else folder
    if used.is_dir() and not (used / RELEASE_FILE).exists():
        error = UnreadableFileError(
            f"'{used}' exists without '{RELEASE_FILE}': it is an older or "
            f"incomplete OGB folder. Delete it to rebuild {name}.")
        error.reason = f'it lacks {RELEASE_FILE}'
        raise error
    # PyG reads processed/pre_transform.pt and pre_filter.pt with
    # weights_only=False: delete them before it can, and after it wrote them.
    processed = [folder / 'processed', Path(f'{folder}_pyg') / 'processed']
    for path in processed:
        remove_pyg_side_files(path)
    with allow_pyg_unpickling(), no_prompt():
        dataset = PygGraphPropPredDataset(name=name, root=str(root))
    for path in processed:
        remove_pyg_side_files(path)
    return dataset


#: What reading a damaged OGB folder raises (a truncated gzip CSV or
#: processed file, a CSV of the wrong shape, ...).
DAMAGED = (OSError, EOFError, ValueError, RuntimeError, IndexError,
           KeyError, zlib.error, pickle.UnpicklingError)


def open_checked(name: str, root: Path, built: Optional[dict]):
    """``(dataset, split)`` of the folder of :obj:`name`, or
    :class:`UnreadableFileError` saying why the folder cannot be used: a
    file is missing, truncated or corrupt, or (a folder this module built,
    :obj:`built` its build info) the graphs or the split are not those it
    was built with."""
    try:
        dataset = open_ogb(name, root)
        split = dataset.get_idx_split()
    except UnreadableFileError:
        raise
    except DAMAGED as e:
        line = (str(e).strip().splitlines() or [''])[0][:200]
        error = UnreadableFileError(
            f"'{ogb_folder(name, root)}' cannot be read "
            f"({type(e).__name__}: {line}). Delete it to rebuild {name}.")
        error.reason = f'a file cannot be read ({type(e).__name__}: {line})'
        raise error from None
    if built is not None:
        sizes = [len(split[k]) for k in ('train', 'valid', 'test')]
        if len(dataset) != built.get('num_graphs', len(dataset)) or \
                sizes != built.get('split_sizes', sizes):
            error = UnreadableFileError(
                f"'{ogb_folder(name, root)}' holds {len(dataset)} graphs "
                f"split {sizes}, not the {built.get('num_graphs')} split "
                f"{built.get('split_sizes')} it was built with. Delete it to "
                f"rebuild {name}.")
            error.reason = (f'it holds {len(dataset)} graphs split {sizes}, '
                            f"not the {built.get('num_graphs')} split "
                            f"{built.get('split_sizes')} it was built with")
            raise error
    return dataset, split
