"""The linear datamodeling score (LDS), the protocol D-TRAK, DAS and K-FAC influence report:
train models on random subsets of the training set, measure each query's loss under each,
and ask how well the sum of a method's scores over each subset ranks those losses.

Sign convention: scores are higher for more influential items, and the model output is the
query's loss, which falls when influential items are in the training set; the prediction
for a subset is therefore minus the sum of its members' scores (D-TRAK's `mask @ -scores`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import bootstrap, rankdata

from mucs_pipeline import rng


def draw_subsets(
    n: int, num_subsets: int, alpha: float, seed: int, split: str = "eval"
) -> torch.Tensor:
    """(S, n) membership of S subsets of round(alpha n) training items each, drawn uniformly
    without replacement, subset s from its own stream ("lds-subsets", seed, s), or for
    split="tune" from ("lds-subsets", "tune", seed, s): tuning subsets that are not the
    reported ones. A subset does not change when S grows."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: expected a fraction in (0, 1)")
    size = round(alpha * n)
    if not 0 < size < n:
        raise ValueError(f"alpha={alpha} of {n} items keeps {size}: expected some in, some out")
    members = torch.zeros(num_subsets, n, dtype=torch.bool)
    for s in range(num_subsets):
        keys = ("lds-subsets", seed, s) if split == "eval" else ("lds-subsets", split, seed, s)
        members[s, torch.randperm(n, generator=rng.generator(*keys))[:size]] = True
    return members


def predictions(scores: torch.Tensor, members: torch.Tensor) -> np.ndarray:
    """(S, m) predicted losses: minus each query's scores (m, n) summed over each subset."""
    return -(members.double() @ scores.double().T).numpy()


def _spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of a with the same column of b (rows: subsets),
    as scipy's spearmanr: Pearson of average ranks; nan where a column is constant.
    Written here because spearmanr of two (S, m) arrays computes the whole (2m, 2m) matrix,
    of which LDS needs only the m matched pairs."""
    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
    norm = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(axis=0) / norm, np.nan)


def per_query(scores: torch.Tensor, members: torch.Tensor, outputs: np.ndarray) -> np.ndarray:
    """(m,) each query's Spearman correlation, across subsets, of predicted and measured
    losses (`outputs`: (S, m), the subset models' losses of the queries)."""
    return _spearman_columns(predictions(scores, members), np.asarray(outputs, float))


def lds(
    scores: torch.Tensor,
    members: torch.Tensor,
    outputs: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """LDS (the mean over queries of `per_query`) with a bootstrap confidence interval over
    the subset models (scipy's BCa, resampling subsets, as D-TRAK's CI): {lds, ci_low,
    ci_high, per_query}. Queries whose losses or predictions are constant across subsets
    (no correlation defined) are left out of the mean."""
    pred, out = predictions(scores, members), np.asarray(outputs, float)
    rho = _spearman_columns(pred, out)

    def mean_lds(rows: np.ndarray) -> float:
        return float(np.nanmean(_spearman_columns(pred[rows], out[rows])))

    ci = bootstrap(
        (np.arange(len(pred)),), mean_lds, vectorized=False, n_resamples=resamples,
        confidence_level=confidence, random_state=np.random.default_rng(seed),
    ).confidence_interval  # fmt: skip
    return {
        "lds": float(np.nanmean(rho)),
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "per_query": rho,
    }


def ceiling(outputs_a: np.ndarray, outputs_b: np.ndarray) -> float:
    """The LDS that retraining itself reaches: the mean over queries of the Spearman
    correlation, across subsets, between two models per subset trained with different
    seeds ((S, m) losses each). No method's scores can be expected to do better against
    one model per subset; against the mean of R, see `ceiling_of_mean`."""
    return float(np.nanmean(_spearman_columns(np.asarray(outputs_a), np.asarray(outputs_b))))


def ceiling_of_mean(agreement: float, replicates: int) -> float:
    """The correlation a perfect prediction reaches with the mean of R replicates whose
    pairwise agreement is `agreement` (Spearman-Brown: sqrt(R a / (1 + (R - 1) a)), for
    linear correlation, here applied to Spearman's as an approximation): averaging
    replicates removes noise, so the LDS of a method can exceed the two-seed agreement."""
    if agreement <= 0:
        return agreement
    return float(np.sqrt(replicates * agreement / (1 + (replicates - 1) * agreement)))
