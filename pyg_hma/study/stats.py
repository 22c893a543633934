r"""The statistics of the reproduction report: a mean's t interval, the
verdict against the paper's number, paired differences by seed, Holm's
adjustment over all paired tests of the report, and the smallest
difference a paired comparison detects at 80% power."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import optimize, stats

#: Verdict rule, stated once in the report.
VERDICT_RULE = (
    "A cell is **reproduced** when the paper's mean lies inside the 95% "
    "confidence interval of our mean over seeds (Student's t, n-1 degrees "
    "of freedom), **not reproduced** when it lies outside (we say whether "
    "ours is above or below), and **inconclusive** with fewer than 3 seeds.")

#: Significance level of every test of the report.
ALPHA = 0.05
#: Power at which the report states each paired comparison's detectable
#: difference.
POWER = 0.8

#: The multiple-comparisons and power rules, stated once in the report.
PAIRED_RULE = (
    "Paired tests: the difference of two methods' test scores on the same "
    "seeds, a two-sided paired t-test per comparison. **p (Holm)** adjusts "
    "the p-values of all paired tests of this report together (Holm's "
    "step-down rule, family-wise error rate 5%); a difference counts as "
    "better or worse only when its adjusted p is below 0.05. **detectable** "
    "is the smallest true difference its n pairs detect with 80% power "
    "(two-sided paired t-test at alpha 0.05, noncentral t) given the "
    "observed standard deviation of the paired differences: a paper gain "
    "smaller than it cannot be confirmed or ruled out by these seeds.")


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
    return dict(mean=mean, low=mean - half, high=mean + half, p=p, n=n,
                sd=std)


def holm(pvalues: Sequence[float]) -> List[float]:
    r"""Holm's step-down adjustment of :obj:`pvalues` (one family), in the
    given order: the i-th smallest p times (m - i + 1), made monotone,
    capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_power(n: int, effect: float, alpha: float = ALPHA) -> float:
    r"""Power of a two-sided paired t-test with :obj:`n` pairs when the true
    mean difference is :obj:`effect` standard deviations of the
    differences."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n)
    upper = float(stats.nct.sf(crit, df, nc))
    # The far tail, P(T < -crit) = P(-T > crit), is tiny for a positive
    # effect; scipy's noncentral t gives NaN for some of those.
    lower = float(stats.nct.sf(crit, df, -nc))
    return upper + (lower if math.isfinite(lower) else 0.0)


def detectable_difference(n: int, sd: float, power: float = POWER,
                          alpha: float = ALPHA) -> float:
    r"""The smallest true mean difference that a two-sided paired t-test at
    :obj:`alpha` with :obj:`n` pairs detects with probability
    :obj:`power`, when the paired differences have standard deviation
    :obj:`sd` (NaN below 2 pairs or without a finite sd)."""
    if n < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    high = 1.0  # in standard deviations; power grows with the effect
    while paired_power(n, high, alpha) < power:
        high *= 2
    effect = optimize.brentq(lambda d: paired_power(n, d, alpha) - power,
                             0.0, high, xtol=1e-10)
    return effect * sd


