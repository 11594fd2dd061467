"""AUC and Mann-Whitney U of a method's similarities against random removal's."""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu
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
