r"""The statistics of the reproduction report: a mean's t interval, the
verdict against the paper's number, paired differences by seed."""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

#: Verdict rule, stated once in the report.
VERDICT_RULE = (
    "A cell is **reproduced** when the paper's mean lies inside the 95% "
    "confidence interval of our mean over seeds (Student's t, n-1 degrees "
    "of freedom), **not reproduced** when it lies outside (we say whether "
    "ours is above or below), and **inconclusive** with fewer than 3 seeds.")


def mean_interval(values: Sequence[float], level: float = 0.95
                  ) -> Tuple[float, float, float, int]:
    r"""``(mean, std, half-width of the t interval, n)`` of the finite
    :obj:`values` (std and half-width NaN below 2 values)."""
    vals = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n < 2:
        return float(vals.mean()), math.nan, math.nan, 1
    std = float(vals.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return float(vals.mean()), std, half, n


def verdict(values: Sequence[float], paper_mean: Optional[float]) -> str:
    r"""``reproduced``, ``not reproduced (below|above)``, ``inconclusive``
    or ``no paper number`` (see :data:`VERDICT_RULE`)."""
    if paper_mean is None:
        return 'no paper number'
    mean, _, half, n = mean_interval(values)
    if n < 3:
        return 'inconclusive'
    if abs(mean - paper_mean) <= half:
        return 'reproduced'
    return 'not reproduced (' + ('below' if mean < paper_mean else 'above') \
        + ')'


def paired_difference(a: Dict[int, float], b: Dict[int, float]
                      ) -> Optional[dict]:
    r"""``a - b`` paired by seed: mean, 95% interval, paired t-test p-value
    and the number of pairs (``None`` below 2 pairs)."""
    seeds = sorted(s for s in set(a) & set(b)
                   if math.isfinite(a[s]) and math.isfinite(b[s]))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, std, half, n = mean_interval(diffs)
    p = float(stats.ttest_rel([a[s] for s in seeds],
                              [b[s] for s in seeds]).pvalue) if std > 0 \
        else (1.0 if mean == 0 else 0.0)
    return dict(mean=mean, low=mean - half, high=mean + half, p=p, n=n)


