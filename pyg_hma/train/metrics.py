r"""Evaluation metrics, computed once per split from all its predictions.

* ``'accuracy'``: fraction of correct predictions (in ``[0, 1]``);
* ``'mcc'``: Matthews correlation coefficient
  (:func:`sklearn.metrics.matthews_corrcoef`, in ``[-1, 1]``; the same
  multi-class formula in NumPy when scikit-learn is not installed);
* ``'rocauc'``: ROC-AUC by :class:`ogb.graphproppred.Evaluator` (the mean
  over tasks that have both classes, labelled entries only). When :mod:`ogb`
  is not installed the same computation is done with scikit-learn, and
  without scikit-learn with the rank (Mann-Whitney) formula in NumPy, which
  gives the same value, ties included.

Predictions are argmax of the logits for a multi-class head, and
``logit > 0`` for a one-logit (BCE) head.
"""
from __future__ import annotations

from typing import Optional

import functools

import numpy as np
from torch import Tensor

from ..registry import UnknownNameError

METRICS = ('accuracy', 'mcc', 'rocauc')


def predictions(logits: Tensor) -> Tensor:
    r"""Class predictions of a multi-class or a one-logit binary head."""
    if logits.dim() == 2 and logits.size(1) > 1:
        return logits.argmax(dim=1)
    return (logits.view(-1) > 0).long()


def _labels(y: Tensor) -> np.ndarray:
    return y.view(-1).long().cpu().numpy()


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    # P(score of a positive > score of a negative) + P(equal) / 2: the area
    # under the ROC curve with ties interpolated, like roc_auc_score.
    _, inverse, counts = np.unique(score, return_inverse=True,
                                   return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, ties avg
    ranks = mean_rank[inverse]
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0)
                 / (n_pos * n_neg))


def _rocauc_sklearn(y_true: np.ndarray, y_score: np.ndarray) -> float:
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # e.g. a GPU image with torch and PyG only
        roc_auc_score = _binary_auc
    scores = []
    for t in range(y_true.shape[1]):
        labelled = y_true[:, t] == y_true[:, t]
        col = y_true[labelled, t]
        if col.size and (col == 1).any() and (col == 0).any():
            scores.append(roc_auc_score(col, y_score[labelled, t]))
    if not scores:
        return float('nan')  # no task has both classes
    return float(np.mean(scores))


@functools.lru_cache(maxsize=None)
def _evaluator(name: str):
    try:
        from ogb.graphproppred import Evaluator
    except ImportError:  # e.g. a GPU image without ogb
        return None
    try:
        return Evaluator(name)
    except Exception:  # a name unknown to this ogb version
        return Evaluator('ogbg-molhiv')


def rocauc(y_true: Tensor, logits: Tensor,
           dataset: Optional[str] = None) -> float:
    r"""ROC-AUC of scores :obj:`logits` against binary :obj:`y_true` (both
    :math:`(N, T)`, NaN marks an unlabelled entry), as OGB computes it. A
    two-logit head is scored by its positive-class softmax. NaN when no task
    has both classes (e.g. a tiny subset), so that one such split does not
    end a run; a NaN validation score is never selected."""
    if logits.dim() == 2 and logits.size(1) == 2 and y_true.numel() == \
            logits.size(0):
        logits = logits.softmax(dim=1)[:, 1:]
    y_true = y_true.float().view(logits.size(0), -1).cpu().numpy()
    y_score = logits.float().view(logits.size(0), -1).cpu().numpy()
    # Any binary-classification OGB dataset gives the same computation; use
    # the dataset's own evaluator when it is one.
    evaluator = _evaluator(dataset if dataset and dataset.startswith(
        'ogbg-mol') else 'ogbg-molhiv')
    if evaluator is None or evaluator.num_tasks != y_true.shape[1]:
        return _rocauc_sklearn(y_true, y_score)
    try:
        return float(evaluator.eval({'y_true': y_true,
                                     'y_pred': y_score})['rocauc'])
    except RuntimeError:  # OGB: no task has both classes
        return float('nan')


def matthews_corrcoef(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    r"""scikit-learn's (multi-class) Matthews correlation coefficient; 0
    when it is undefined."""
    try:
        from sklearn.metrics import matthews_corrcoef as mcc
    except ImportError:
        pass
    else:
        return float(mcc(y_true, y_pred))
    classes, idx = np.unique(np.concatenate([y_true, y_pred]),
                             return_inverse=True)
    k = len(classes)
    conf = np.zeros((k, k), dtype=np.float64)
    np.add.at(conf, (idx[:len(y_true)], idx[len(y_true):]), 1)
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    n, correct = conf.sum(), np.trace(conf)
    cov_yp = correct * n - t_sum @ p_sum
    cov_pp = n * n - p_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_yp / np.sqrt(cov_tt * cov_pp))


def compute_metric(metric: str, logits: Tensor, y: Tensor,
                   dataset: Optional[str] = None) -> float:
    r"""Computes :obj:`metric` of all predictions of a split.

    Args:
        metric: ``'accuracy'``, ``'mcc'`` or ``'rocauc'``.
        logits: :math:`(N, C)` logits, or :math:`(N, 1)` for a BCE head.
        y: targets, :math:`(N)` or :math:`(N, T)`.
        dataset: dataset name (picks OGB's evaluator for ``'rocauc'``).
    """
    if metric not in METRICS:
        raise UnknownNameError(f"Unknown metric '{metric}'; choose one of "
                               f"{METRICS}")
    if logits.size(0) != y.size(0):
        raise ValueError(f'{logits.size(0)} predictions for {y.size(0)} '
                         f'targets')
    if logits.size(0) == 0:
        return float('nan')
    if metric == 'rocauc':
        return rocauc(y, logits, dataset)
    pred = predictions(logits).cpu().numpy()
    true = _labels(y)
    if metric == 'accuracy':
        return float((pred == true).mean())
    return matthews_corrcoef(true, pred)


def scale_for_table(metric: str, value: float) -> float:
    r"""The paper's scale: ROC-AUC and accuracy in percent, MCC raw."""
    return value * 100.0 if metric in ('rocauc', 'accuracy') else value


METRIC_LABELS = {'rocauc': 'ROC-AUC x100', 'accuracy': 'accuracy %',
                 'mcc': 'MCC'}

__all__ = ['compute_metric', 'predictions', 'rocauc', 'scale_for_table',
           'METRICS', 'METRIC_LABELS']
