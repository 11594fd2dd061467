"""The paper-scale cost model (scripts/cost_model.py): its counts, from fixed per-op timings."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import CONF
from hydra import compose, initialize_config_dir

SPEC = importlib.util.spec_from_file_location(
    "cost_model", Path(__file__).resolve().parent.parent / "scripts" / "cost_model.py"
)
cost = sys.modules["cost_model"] = importlib.util.module_from_spec(SPEC)  # dataclasses look it up
SPEC.loader.exec_module(cost)

# Round numbers, so that every expected value below can be checked by hand.
OPS = cost.Ops(
    forward=0.01, unlearn=0.03, unlearn_update=0.5, dtrak_draw=0.04, dtrak_item=0.2,
    das_draw=0.05, das_item=0.3, proj_block=1.0, proj_block_grad=0.1, kernel_flops=1e9,
)  # fmt: skip
GEO = cost.Geometry(n=1000, m=20, unlearn_steps=100, proj_blocks=10, per_shard=5)


@pytest.fixture(scope="module")
def methods():
    """The paper's method configs (the CIFAR10 experiments), composed from conf/."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return {
            m: compose("config", overrides=[f"+experiment=cifar10_{m}"]).method
            for m in cost.METHODS
        }


def test_mucs_counts_unlearning_steps_and_two_grids(methods):
    parts = cost.seconds_per_item(methods["mucs"], OPS, GEO)
    assert parts["score"] == pytest.approx(1000 * 100 * 0.01)  # |Z| x |N| forwards of F2
    assert parts["f1_grid"] == pytest.approx(parts["score"] / 20)  # F1 once, over m items
    assert parts["unlearn"] == pytest.approx(100 * ((100 + 100) * 0.03 + 0.5))


def test_doubling_the_training_set_doubles_scoring_but_not_unlearning(methods):
    for name in ("mucs", "forward_inf", "abu"):
        small = cost.seconds_per_item(methods[name], OPS, GEO)
        large = cost.seconds_per_item(methods[name], OPS, replace(GEO, n=2000))
        assert large["score"] == pytest.approx(2 * small["score"])
        assert large["f1_grid"] == pytest.approx(2 * small["f1_grid"])
    small = cost.seconds_per_item(methods["mucs"], OPS, GEO)
    large = cost.seconds_per_item(methods["mucs"], OPS, replace(GEO, n=2000))
    assert large["unlearn"] == small["unlearn"]
    steps = cost.seconds_per_item(methods["mucs"], OPS, replace(GEO, unlearn_steps=200))
    assert steps["unlearn"] == pytest.approx(2 * small["unlearn"])
    assert steps["score"] == small["score"]


def test_gradient_features_are_amortised_over_m_and_projected_per_shard(methods):
    cfg = methods["dtrak"]
    assert (cfg.num_noises, cfg.chunk, cfg.proj_dim) == (100, 8, 16384)
    parts = cost.seconds_per_item(cfg, OPS, GEO)
    assert parts["train_grads"] == pytest.approx(1000 * (100 * 0.04 + 0.2) / 20)
    # 200 training shards of 5: every shard regenerates the 10 blocks
    assert parts["train_proj"] == pytest.approx(10 * (200 * 1.0 + 1000 * 0.1) / 20)
    assert parts["item_grads"] == pytest.approx(100 * 0.04 + 0.2)
    # 20 generated items arrive 8 at a time: shards of 8, 8 and 4
    assert parts["item_proj"] == pytest.approx(10 * (3 * 1.0 + 20 * 0.1) / 20)
    twice = cost.seconds_per_item(cfg, OPS, replace(GEO, m=40))
    for part in ("train_grads", "train_proj", "kernel"):
        assert twice[part] == pytest.approx(parts[part] / 2)
    assert twice["item_grads"] == parts["item_grads"]


def test_das_adds_its_training_error_grid(methods):
    parts = cost.seconds_per_item(methods["das"], OPS, GEO)
    assert parts["weights"] == pytest.approx(1000 * 100 * 0.01 / 20)
    assert parts["item_grads"] == pytest.approx(100 * 0.05 + 0.3)


def test_kernel_flops_switch_to_the_gram_matrix_below_the_feature_dimension():
    assert cost.kernel_flops(10, 100) == (2 * 10 * 10 * 100 + 1000 / 3, 2 * 10 * 100 + 200)
    assert cost.kernel_flops(100, 10) == (2 * 10 * 10 * 100 + 1000 / 3, 200 + 2 * 100 * 10)


def test_shards_follow_the_chunked_feature_loop():
    assert cost.feature_shards(20, 5, 8) == [8, 8, 4]
    assert cost.feature_shards(5, 5, 8) == [5]
    assert cost.feature_shards(7, 1450, 8) == [7]
    assert cost.training_shards(12, 5, 2) == {5: 2, 2: 1}  # slices of at most 5 items


def test_abu_fisher_and_ascent(methods):
    cfg = methods["abu"]
    parts = cost.seconds_per_item(cfg, OPS, GEO)
    assert parts["fisher"] == pytest.approx(1000 * cfg.fisher_epochs * (0.04 + 0.2) / 20)
    assert parts["ascent"] == pytest.approx(cfg.steps * cfg.ga_draws * 0.03)


def test_scaling_to_another_device():
    parts = {"f1_grid": 10.0, "score": 100.0, "unlearn": 50.0}
    assert cost.minutes(parts) == pytest.approx(160 / 60)
    assert cost.scaled(parts, 10.0) == pytest.approx({"f1_grid": 1.0, "score": 10.0,
                                                      "unlearn": 5.0})  # fmt: skip
    bf16 = cost.scaled(parts, 10.0, scoring_factor=100.0)  # only the loss grids
    assert bf16 == pytest.approx({"f1_grid": 0.1, "score": 1.0, "unlearn": 5.0})
    assert cost.setup_seconds(parts, 20) == 200.0


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="'pixel'"):
        cost.seconds_per_item({"name": "pixel"}, OPS, GEO)
