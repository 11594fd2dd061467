"""The LDS statistic on a linear world whose answer is known: each training item lowers each
query's loss by a fixed amount, so the exact effects rank the subsets' losses perfectly."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mucs_pipeline.evaluation.lds import ceiling, draw_subsets, lds, per_query, predictions

N, M, ALPHA = 40, 20, 0.5  # training items, queries


def world(num_subsets: int, seed: int, noise: float = 0.05):
    """(members, effects, losses): each subset's loss of each query is minus the sum of
    its members' effects, plus noise (retraining's own randomness)."""
    effects = torch.randn(M, N, generator=torch.Generator().manual_seed(0))
    members = draw_subsets(N, num_subsets, ALPHA, seed)
    gen = np.random.default_rng(seed)
    losses = -(members.double() @ effects.double().T).numpy()
    return members, effects, losses + noise * gen.standard_normal(losses.shape)


def measured_effects(members: torch.Tensor, losses: np.ndarray) -> torch.Tensor:
    """(M, N) each item's measured effect: the mean loss of subsets without it minus the
    mean loss of those with it (what leave-subset-out retraining shows of an item)."""
    inside = members.numpy().astype(float)
    with_item = inside.T @ losses / inside.sum(axis=0)[:, None]
    without = (1 - inside).T @ losses / (1 - inside).sum(axis=0)[:, None]
    return torch.from_numpy(without - with_item).T


def test_subsets_hold_alpha_of_the_items_and_are_reproducible():
    members = draw_subsets(N, 8, ALPHA, seed=3)
    assert members.shape == (8, N) and (members.sum(dim=1) == N // 2).all()
    assert torch.equal(members, draw_subsets(N, 8, ALPHA, seed=3))
    assert torch.equal(members[:4], draw_subsets(N, 4, ALPHA, seed=3))  # S grows, rows stay
    assert not torch.equal(members, draw_subsets(N, 8, ALPHA, seed=4))
    with pytest.raises(ValueError, match="alpha=1"):
        draw_subsets(N, 8, 1, seed=3)


def test_an_oracle_scores_near_1_random_near_0_and_a_flipped_oracle_near_minus_1():
    # The oracle's effects are measured on 2,000 other subsets, as retraining would show them.
    oracle = measured_effects(*world(2000, seed=1)[::2])
    members, _, losses = world(64, seed=2)
    best = lds(oracle, members, losses, resamples=200)
    assert best["lds"] > 0.95 and best["ci_low"] < best["ci_high"] <= 1
    # BCa corrects for the bootstrap's skew near 1: the interval is tight, not centred
    assert best["ci_high"] - best["ci_low"] < 0.05 and abs(best["ci_low"] - best["lds"]) < 0.05
    chance = lds(torch.randn(M, N, generator=torch.Generator().manual_seed(5)), members, losses)
    assert abs(chance["lds"]) < 0.1
    assert lds(-oracle, members, losses, resamples=200)["lds"] < -0.95
    assert best["per_query"].shape == (M,)


def test_per_query_is_scipys_spearman_of_predicted_and_measured_losses():
    members, effects, losses = world(16, seed=6, noise=3.0)
    pred = predictions(effects, members)
    assert np.allclose(pred, -(members.double() @ effects.double().T).numpy())
    expected = [spearmanr(pred[:, q], losses[:, q]).statistic for q in range(M)]
    assert np.allclose(per_query(effects, members, losses), expected)


def test_the_ceiling_is_the_agreement_of_two_retrainings():
    members, _, losses = world(64, seed=7, noise=0.0)
    gen = np.random.default_rng(0)
    close = ceiling(losses + 0.1 * gen.standard_normal(losses.shape), losses)
    unrelated = ceiling(gen.standard_normal(losses.shape), losses)
    assert close > 0.95 and abs(unrelated) < 0.1
