import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import mannwhitneyu

from mucs_pipeline.evaluation.metrics import similarities, ssim_sigma
from mucs_pipeline.evaluation.stats import compare

METRIC = OmegaConf.create({"names": ["ssim", "neg_mse"], "ssim_sigma": 1.5})


@pytest.mark.parametrize("resolution", [8, 32])
def test_metrics_are_maximal_for_identical_images_and_fall_with_noise(resolution):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, resolution, resolution, generator=gen) * 2 - 1
    same = similarities(x, x, METRIC)
    assert torch.allclose(same["ssim"], torch.ones(6), atol=1e-5)
    assert torch.equal(same["neg_mse"], torch.zeros(6))
    previous = {k: v.mean() for k, v in same.items()}
    for level in (0.1, 0.3, 0.6):
        noisy = (x + level * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
        sims = similarities(x, noisy, METRIC)
        for name, value in sims.items():
            assert value.mean() < previous[name]
            previous[name] = value.mean()


def test_ssim_window_shrinks_only_below_torchmetrics_window():
    # torchmetrics takes 2 * int(3.5 sigma + 0.5) + 1 taps: 11 at sigma 1.5.
    assert ssim_sigma(32, 1.5) == 1.5 and ssim_sigma(12, 1.5) == 1.5
    for resolution, taps in ((8, 7), (11, 9), (4, 3)):
        sigma = ssim_sigma(resolution, 1.5)
        assert int(3.5 * sigma + 0.5) * 2 + 1 == taps


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        similarities(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8), METRIC)


def test_auc_and_u_test_match_by_hand():
    method = np.array([0.1, 0.2, 0.3, 0.9])
    random = np.array([0.5, 0.6, 0.7, 0.8])
    auc, p = compare(method, random)
    # Pairs where the method's similarity is lower than random's: 3 items x 4 + 0 = 12 of 16.
    assert auc == pytest.approx(12 / 16)
    assert p == pytest.approx(mannwhitneyu(random, method, alternative="greater").pvalue)
    assert compare(random, method)[0] == pytest.approx(4 / 16)
    assert compare(method, method)[0] == pytest.approx(0.5)


def test_ssim_matches_scikit_image_with_the_same_window():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=gen)).clamp(-1, 1)
    ours = similarities(a, b, METRIC)["ssim"]
    for i in range(2):
        # The same 11-tap window on [0, 1] images; scikit-image crops the border that
        # torchmetrics pads by reflection, so they agree only roughly.
        ref = structural_similarity(
            (a[i].numpy() + 1) / 2, (b[i].numpy() + 1) / 2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0, channel_axis=0,
        )  # fmt: skip
        assert ours[i].item() == pytest.approx(ref, abs=0.02)


def test_normalized_difference_matches_a_hand_computation():
    from mucs_pipeline.evaluation.stats import normalized_difference

    # median(random) = 0.8; items 0.6, 0.8, 1.0 -> -25%, 0%, +25%: mean 0, sd 25
    mean, ci = normalized_difference(np.array([0.6, 0.8, 1.0]), np.array([0.7, 0.8, 0.9]))
    assert mean == pytest.approx(0.0, abs=1e-9)
    assert ci == pytest.approx(4.302653 * 25 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)
    # Negative similarities (-MSE): more error than random is still a negative difference.
    mean, _ = normalized_difference(np.array([-0.2, -0.2]), np.array([-0.1, -0.1]))
    assert mean == pytest.approx(-100.0)


def test_top_k_overlaps_on_constructed_sets():
    from mucs_pipeline.evaluation.protocol import top_k_sets
    from mucs_pipeline.evaluation.stats import overlap_between_methods, pair_overlaps

    a = [{0, 1, 2, 3}, {2, 3, 4, 5}, {0, 1, 2, 3}]
    assert pair_overlaps(a, 4) == [50.0, 100.0, 50.0]
    b = [{0, 1, 8, 9}, {2, 3, 4, 5}, {7, 8, 9, 10}]
    assert overlap_between_methods(a, b, 4) == pytest.approx((50 + 100 + 0) / 3)
    scores = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
    assert top_k_sets(scores, 2) == [{0, 1}, {4, 5}]


def test_control_items_use_a_two_sided_test():
    from mucs_pipeline.evaluation.stats import compare_two_sided

    higher = np.array([0.9, 0.95, 0.99, 0.97, 0.98])  # removal raised similarity
    lower = np.array([0.1, 0.2, 0.15, 0.12, 0.18])
    auc, p_two = compare_two_sided(higher, lower)
    assert auc == 0.0 and p_two < 0.05  # a change in either direction is detected
    assert p_two == pytest.approx(mannwhitneyu(lower, higher, alternative="two-sided").pvalue)


@pytest.mark.parametrize("shift", [0.4, 0.8])
def test_items_needed_matches_a_direct_simulation_and_shrinks_with_the_effect(shift):
    """From large samples of a known shift, the estimated N reaches about 80% power when
    simulated from the true distributions; a larger shift needs fewer items."""
    from mucs_pipeline.evaluation.stats import items_needed

    rng = np.random.default_rng(0)
    n = items_needed(rng.normal(-shift, 1, 4000), rng.normal(0, 1, 4000), alpha=0.01)
    twice = items_needed(rng.normal(-2 * shift, 1, 4000), rng.normal(0, 1, 4000), alpha=0.01)
    assert twice < n / 2.5  # about n / 4: N scales with 1 / effect^2
    sims = mannwhitneyu(
        rng.normal(0, 1, (2000, n)), rng.normal(-shift, 1, (2000, n)),
        alternative="greater", axis=1,
    ).pvalue  # fmt: skip
    assert 0.7 <= np.mean(sims < 0.01) <= 0.9
    assert items_needed(rng.normal(0.5, 1, 40), rng.normal(0, 1, 40)) is None  # less change


def test_a_result_that_is_not_significant_says_how_many_items_would_be():
    from mucs_pipeline.evaluation.protocol import power_note

    row = {"method": "mucs", "metric": "ssim", "subset": "target", "significant": False,
           "n_items": 40, "p_value": 0.14, "auc": 0.6, "diff_pct": -3.2, "diff_ci": 4.1,
           "items_needed": 90}  # fmt: skip
    note = power_note([row, {**row, "significant": True, "metric": "neg_mse"}], 0.01, seeds=2)
    assert "mucs ssim: not significant with 40 items" in note and "neg_mse" not in note
    assert "about 90 items" in note and "`-m seed=0,1,2,3,4` (5 runs of 20 items)" in note
    assert "no number of items" in power_note([{**row, "items_needed": None}], 0.01, 1)
    assert power_note([{**row, "significant": True}], 0.01, 1) == ""


def test_nearest_share_is_one_for_copies_and_zero_for_far_images():
    from mucs_pipeline.evaluation.diagnostics import markdown, nearest_share

    train = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert nearest_share(train[:10].clone(), train, seed=0) == 1.0
    assert nearest_share(train[:10] + 5, train, seed=0) == 0.0
    d = {"diagnostic": "fit: x", "value": 0.5, "meaning": "why"}
    text = markdown({0: [d], 1: [{**d, "value": 0.25}]})
    assert "- fit: x: **0.5** (seed 0), **0.25** (seed 1). why." in text
