"""Statistics of the evaluation: AUC and U test against random removal, App. B.1 normalised
differences with confidence intervals, top-k overlaps (App. B.2, B.3)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import mannwhitneyu, sem
from scipy.stats import t as t_dist
from sklearn.metrics import roc_auc_score


def compare(sim_method: np.ndarray, sim_random: np.ndarray) -> tuple[float, float]:
    """(AUC, one-sided p). AUC > 0.5: the method's removal lowered similarity more than random's.

    The AUC treats lower similarity as the positive score for the method's items; the
    U test asks whether random's similarities are stochastically greater.
    """
    sim_method, sim_random = np.asarray(sim_method, float), np.asarray(sim_random, float)
    labels = np.r_[np.ones(len(sim_method)), np.zeros(len(sim_random))]
    auc = roc_auc_score(labels, -np.r_[sim_method, sim_random])
    p = mannwhitneyu(sim_random, sim_method, alternative="greater").pvalue
    return float(auc), float(p)


def compare_two_sided(sim_method: np.ndarray, sim_random: np.ndarray) -> tuple[float, float]:
    """(AUC, two-sided p): for control items, where removal should change nothing either way."""
    auc, _ = compare(sim_method, sim_random)
    p = mannwhitneyu(sim_random, sim_method, alternative="two-sided").pvalue
    return auc, float(p)


def items_needed(
    sim_method: np.ndarray,
    sim_random: np.ndarray,
    alpha: float = 0.01,
    power: float = 0.8,
    resamples: int = 400,
    max_items: int = 10_000,
    seed: int = 0,
) -> int | None:
    """About how many items (per arm) the one-sided U test of `compare` needs to reach
    p < alpha in a share `power` of experiments, at the effect these samples show; None
    when not even `max_items` do (no effect, or the method changed less than random).

    Estimated by resampling (scipy has no power function for the U test): for a
    candidate N, draw N items with replacement from each observed sample, `resamples`
    times, and count how often the test rejects (asymptotic p); N doubles until the power
    is reached, then bisection narrows it to within 5%. Fixed `seed`: the same samples
    give the same N.
    """
    sim_method, sim_random = np.asarray(sim_method, float), np.asarray(sim_random, float)
    rng = np.random.default_rng(seed)

    def reaches(n: int) -> bool:
        m = rng.choice(sim_method, (resamples, n))
        r = rng.choice(sim_random, (resamples, n))
        p = mannwhitneyu(r, m, alternative="greater", axis=1, method="asymptotic").pvalue
        return np.mean(p < alpha) >= power

    high = 4
    while not reaches(high):
        if high >= max_items:
            return None
        high = min(2 * high, max_items)
    low = high // 2
    while high - low > max(1, high // 20):
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value)."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = sem(values) * t_dist.ppf((1 + confidence) / 2, len(values) - 1)
    return float(values.mean()), float(np.nan_to_num(half))


def normalized_difference(sim_method: np.ndarray, sim_random: np.ndarray) -> tuple[float, float]:
    """App. B.1: mean over items of 100 (s_i / median(S_random) - 1), with its 95% CI (%).

    Written as 100 (s_i - median) / |median|: the same for the paper's positive
    similarities, and still negative = more change for negative ones (-MSE).
    """
    median = np.median(sim_random)
    return mean_ci(100 * (np.asarray(sim_method, float) - median) / abs(median))


def pair_overlaps(sets: list[set[int]], k: int) -> list[float]:
    """App. B.2 / Table 7: top-k overlap (%) of each of the m(m-1)/2 pairs of items."""
    return [100 * len(a & b) / k for a, b in itertools.combinations(sets, 2)]


def overlap_between_methods(sets_a: list[set[int]], sets_b: list[set[int]], k: int) -> float:
    """App. B.3 / Table 8: top-k overlap (%) of two methods on the same item, averaged."""
    return float(np.mean([100 * len(a & b) / k for a, b in zip(sets_a, sets_b, strict=True)]))
