r"""Per-epoch curves for TensorBoard (``--tensorboard DIR``).

The engine calls a callback after every epoch (``fit(..., callbacks=[cb])``,
``cb(epoch, record)``); :class:`TensorBoardCurves` writes the record's
numbers as scalars: ``loss/train``, ``metric/train``, ``metric/val``,
``metric/TEST_SPLIT``, ``lr``, ``time_s`` and any extras of the objective
(``penalty``), and with ``--compare-evals`` ``metric_by_eval/MODE/SPLIT``.
The per-seed JSON stays the record of a run; the curves are for watching.
TensorBoard is an optional extra: ``pip install 'pyg_hma[tensorboard]'``.
"""
from __future__ import annotations

import os
from typing import Optional

_SKIP = ('epoch', 'val', 'test', 'by_eval_mode', 'train_loss',
         'train_metric')


class TensorBoardCurves:
    r"""A ``fit`` callback writing one run's per-epoch scalars.

    Args:
        log_dir: the run's event folder (one folder per run).
    """
    def __init__(self, log_dir: os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "--tensorboard needs the tensorboard package: pip install "
                "'pyg_hma[tensorboard]'") from None
        self.log_dir = str(log_dir)
        self._writer: Optional[object] = SummaryWriter(self.log_dir)

    def __call__(self, epoch: int, rec: dict):
        w = self._writer
        w.add_scalar('loss/train', rec['train_loss'], epoch)
        w.add_scalar('metric/train', rec['train_metric'], epoch)
        w.add_scalar('metric/val', rec['val'], epoch)
        for name, value in rec['test'].items():
            w.add_scalar(f'metric/{name}', value, epoch)
        for mode, scores in (rec.get('by_eval_mode') or {}).items():
            w.add_scalar(f'metric_by_eval/{mode}/val', scores['val'], epoch)
            for name, value in scores['test'].items():
                w.add_scalar(f'metric_by_eval/{mode}/{name}', value, epoch)
        for key, value in rec.items():
            if key not in _SKIP and isinstance(value, (int, float)):
                w.add_scalar(key, value, epoch)
        w.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
