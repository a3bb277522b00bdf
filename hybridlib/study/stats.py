"""The statistics behind the tables: is a difference between models larger than seed noise?

    from hybridlib.study import stats
    stats.welch_interval([80.1, 79.0, 81.2], [70.3, 71.0, 69.8])   # (low, high, df), 95 %
    stats.holm([0.01, 0.04, 0.03])                                  # Holm-adjusted p-values
    stats.minimum_detectable_effect(sd=1.0, n_a=3)                  # points, 80 % power
    stats.binomial_se(80.0, 10_000)                                 # one run's test noise
    stats.one_run_range(80.0, 1.0, 3, 0.4)                          # where one more run lands

Every function takes accuracies in % (points) and returns points. The papers
report one run per cell; with n seeds per cell:

- the difference a - b has a 95 % confidence interval from Welch's standard error
  sqrt(s_a^2 / n_a + s_b^2 / n_b) and the Welch-Satterthwaite degrees of freedom;
- Welch's two-sided p is adjusted by Holm's step-down method over the family of
  comparisons of one table, and the verdict uses the adjusted p;
- the minimum detectable effect (MDE) is the smallest true difference the design
  finds with 80 % power at alpha 0.05 two-sided: the noncentral t of the
  equal-variance t-test (df = n_a + n_b - 2), from the pooled seed sd;
- the binomial standard error sqrt(p (1 - p) / n_test) is the test-set sampling
  noise of one run's accuracy, which the seed sd (one fixed test split) lacks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

__all__ = [
    "binomial_se",
    "holm",
    "holm_verdicts",
    "minimum_detectable_effect",
    "one_run_range",
    "pooled_sd",
    "verdict",
    "welch_interval",
    "welch_test",
]


def welch_interval(
    acc_a: Sequence[float], acc_b: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """(low, high, df): the `level` confidence interval of mean(a) - mean(b), Welch.

    Standard error sqrt(s_a^2 / n_a + s_b^2 / n_b) (sample variances, n - 1), degrees
    of freedom by Welch-Satterthwaite, (v_a + v_b)^2 / (v_a^2 / (n_a - 1) + v_b^2 /
    (n_b - 1)) with v = s^2 / n, and the t quantile from scipy. NaN with fewer than
    two values in either arm or no variance at all.
    """
    a, b = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    v_a, v_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if v_a + v_b == 0:
        return math.nan, math.nan, math.nan
    df = (v_a + v_b) ** 2 / (v_a**2 / (len(a) - 1) + v_b**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(v_a + v_b)
    diff = float(a.mean() - b.mean())
    return diff - half, diff + half, float(df)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the given order; NaN stays NaN and is not
    counted in the family.

    With the m p-values sorted, p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i
    of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p < alpha keeps the
    chance of any false positive in the family at most alpha.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def pooled_sd(acc_a: Sequence[float], acc_b: Sequence[float]) -> float:
    """The pooled seed sd, sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2))."""
    a, b = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    ss = (len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)
    return float(math.sqrt(ss / (len(a) + len(b) - 2)))


def minimum_detectable_effect(
    sd: float, n_a: int, n_b: int | None = None, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true difference (in sd's unit) found with `power` at two-sided `alpha`.

    The equal-variance two-sample t-test with df = n_a + n_b - 2: the noncentrality
    lambda solving P(|T| > t_(1 - alpha/2, df) | T ~ noncentral t(df, lambda)) = power,
    times the standard error sd * sqrt(1/n_a + 1/n_b). (The normal approximation with t
    quantiles, (t_(1 - alpha/2, df) + t_(power, df)) * sd * sqrt(1/n_a + 1/n_b), is
    close and a little smaller.) NaN without an sd or with fewer than 2 seeds per arm.
    """
    n_b = n_a if n_b is None else n_b
    if n_a < 2 or n_b < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    df = n_a + n_b - 2
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def shortfall(nc: float) -> float:
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)) - power

    high = 1.0  # widen the bracket step by step (scipy's nct is NaN far out in the tail)
    while shortfall(high) < 0:
        high *= 2
    nc = optimize.brentq(shortfall, 0.0, high, xtol=1e-10)
    return float(nc * sd * math.sqrt(1 / n_a + 1 / n_b))


def binomial_se(accuracy: float, n_test: float) -> float:
    """sqrt(p (1 - p) / n_test) in points for an accuracy `accuracy` in % on n_test images:
    the test-set sampling noise of one run's accuracy."""
    if n_test is None or not n_test or math.isnan(n_test) or math.isnan(accuracy):
        return math.nan
    p = accuracy / 100.0
    return float(100.0 * math.sqrt(p * (1 - p) / n_test))


def one_run_range(
    mean: float, sd: float, n: int, se_test: float, level: float = 0.95
) -> tuple[float, float]:
    """Where one more run lands with probability `level`, tested on another sample of
    the test set's size: mean +- t_(level, df) * sqrt(sd^2 (1 + 1/n) + 2 se_test^2).

    sd^2 (1 + 1/n): a new seed's spread and the uncertainty of our mean; 2 se_test^2:
    our test split and the other sample each differ from the population by binomial
    noise (the seed sd, measured on one fixed split, holds none of it). The seed part
    is estimated from n seeds (n - 1 df), the binomial part is known, so df is
    Welch-Satterthwaite's: (A + B)^2 / (A^2 / (n - 1)) with A, B the two parts. This is
    the range a paper's single run of the same set-up would fall in. NaN below 2 seeds.
    """
    if n < 2 or math.isnan(sd):
        return math.nan, math.nan
    seeds = sd**2 * (1 + 1 / n)
    test = 2 * se_test**2 if not math.isnan(se_test) else 0.0
    if seeds + test == 0:
        return mean, mean
    df = (seeds + test) ** 2 / (seeds**2 / (n - 1)) if seeds > 0 else math.inf
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(seeds + test)
    return max(0.0, mean - half), min(100.0, mean + half)  # accuracies lie in 0..100 %


def welch_test(acc_a: np.ndarray, acc_b: np.ndarray, alpha: float) -> dict[str, Any]:
    """Welch's t-test of two arms of accuracies (%), without the verdict (that needs the
    family's Holm p, `holm_verdicts`).

    Returns:
        {n_a, n_b, mean_a, mean_b, diff (a - b), ci_low, ci_high (95 %), t, df, p_value
        (two-sided), sd_a, sd_b, sd_pooled, mde}; NaN where an arm has too few values.
    """
    t = p = math.nan
    if len(acc_a) >= 2 and len(acc_b) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero variance: nan, handled in `verdict`
            result = stats.ttest_ind(acc_a, acc_b, equal_var=False)
        t, p = float(result.statistic), float(result.pvalue)
    diff = float(acc_a.mean() - acc_b.mean()) if len(acc_a) and len(acc_b) else math.nan
    low, high, df = welch_interval(acc_a, acc_b)
    sd = pooled_sd(acc_a, acc_b)
    return {
        "n_a": len(acc_a),
        "n_b": len(acc_b),
        "mean_a": float(acc_a.mean()) if len(acc_a) else math.nan,
        "mean_b": float(acc_b.mean()) if len(acc_b) else math.nan,
        "diff": diff,
        "ci_low": low,
        "ci_high": high,
        "t": t,
        "df": df,
        "p_value": p,
        "sd_a": float(acc_a.std(ddof=1)) if len(acc_a) > 1 else math.nan,
        "sd_b": float(acc_b.std(ddof=1)) if len(acc_b) > 1 else math.nan,
        "sd_pooled": sd,
        "mde": minimum_detectable_effect(sd, len(acc_a), len(acc_b), alpha=alpha),
    }


def holm_verdicts(family: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """The `welch_test` rows of one family with their Holm p (`p_holm`) and `verdict`."""
    adjusted = holm([row["p_value"] for row in family])
    for row, p_holm in zip(family, adjusted, strict=True):
        row["p_holm"] = float(p_holm)
        row["verdict"] = verdict(row["n_a"], row["n_b"], row["diff"], p_holm, alpha)
    return family


def verdict(n_a: int, n_b: int, diff: float, p_holm: float, alpha: float) -> str:
    """What a comparison says, in words, from its seeds per arm and its Holm p."""
    if n_a < 2 or n_b < 2:
        return "needs >= 2 seeds per model"
    if math.isnan(p_holm):
        return "identical runs" if diff == 0 else "no seed noise to compare with"
    if p_holm < alpha:
        return f"larger than seed noise (Holm p < {alpha:g})"
    return "within seed noise"
