"""W&B runs read back from their offline event logs: config, names, tags, groups, tables."""

import subprocess
import sys

import pytest
from conftest import make_cfg, read_wandb_run

from mucs_pipeline import pipeline, tracking
from mucs_pipeline.layout import Layout


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A micro run of a MUCS ablation (lambda 0.1) with logger=wandb, as a sweep job of
    +experiment=digits_mucs would run it; every offline run read back, by name."""
    tmp = tmp_path_factory.mktemp("tracking")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    tracking.set_job({"experiment": "digits_mucs", "sweep": "lam", "dataset": "digits"})
    try:
        cfg = make_cfg(tmp, "logger=wandb", "+ablation=u_c1_lam01")
        pipeline.run(cfg)
    finally:
        tracking.set_job({})
        mp.undo()
    runs = [read_wandb_run(folder) for folder in tracking.offline_runs(tmp)]
    return cfg, tmp, {r["name"]: r for r in runs}


def test_every_stage_logs_a_run_with_the_full_config(logged):
    cfg, _, runs = logged
    jobs = sorted(r["job_type"] for r in runs.values())
    # pretrain, one attribute and one retrain per method (mucs and random), evaluate
    assert jobs == ["attribute", "attribute", "evaluate", "pretrain", "retrain", "retrain"]
    for run in runs.values():
        config = run["config"]
        assert config["pretrain"]["steps"] == cfg.pretrain.steps == 12
        assert config["method"]["lam"] == 0.1 and config["ablation"]["name"] == "u_c1_lam01"
        assert config["dataset"]["subset"] == 120 and config["seed"] == 0
        assert config["unit"]["stage"] == run["job_type"]


def test_runs_are_named_tagged_and_grouped_by_comparison(logged):
    cfg, _, runs = logged
    assert len(runs) == 6  # names are unique
    group = f"digits-{Layout(cfg).comparison_key()[:8]}"
    assert {r["group"] for r in runs.values()} == {group}
    (evaluate,) = [r for r in runs.values() if r["job_type"] == "evaluate"]
    assert evaluate["name"].startswith("digits-evaluate-mucs-u_c1_lam01-lam0.1-seed0-")
    for tag in ("dataset:digits", "method:mucs", "ablation:u_c1_lam01", "seed:0", "lam:0.1",
                "experiment:digits_mucs", "sweep:lam", "stage:evaluate"):  # fmt: skip
        assert tag in evaluate["tags"], tag
    (random_retrain,) = [n for n in runs if n.startswith("digits-retrain-random-seed0-")]
    assert "method:random" in runs[random_retrain]["tags"]
    assert "ablation:u_c1_lam01" not in runs[random_retrain]["tags"]
    # The results table and the AUCs as numbers, not strings.
    table = evaluate["tables"]["results"]
    auc = table["columns"].index("auc")
    assert all(isinstance(row[auc], float) for row in table["data"])
    assert isinstance(evaluate["summary"]["target/ssim/auc"], float)


def test_the_attribute_run_holds_the_unlearning_of_each_item(logged):
    cfg, _, runs = logged
    (mucs,) = [r for n, r in runs.items() if n.startswith("digits-attribute-mucs-")]
    steps = cfg.method.max_steps  # micro: every item stops at the cap
    curves = [row for row in mucs["history"] if "unlearn/item1/L_GA" in row]
    assert [row["unlearn/step"] for row in curves] == list(range(steps))
    assert mucs["summary"]["hit_max_steps"] == cfg.generate.num_items
    assert mucs["summary"]["loss_null"] > 0
    table = mucs["tables"]["items"]
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["steps"] for r in rows] == [steps] * cfg.generate.num_items
    assert all(r["hit_max_steps"] is True and r["seconds"] > 0 for r in rows)
    assert {"trajectories", "top_k"} <= mucs["images"]


def test_sync_lists_every_offline_run_not_yet_synced(logged):
    _, tmp, runs = logged
    folders = tracking.offline_runs(tmp)
    assert len(folders) == len(runs)
    (log,) = folders[0].glob("run-*.wandb")
    log.with_name(log.name + ".synced").touch()  # what `wandb sync` leaves behind
    assert tracking.offline_runs(tmp) == folders[1:]
    out = subprocess.run(
        [sys.executable, "-m", "mucs_pipeline.report", str(tmp), "--sync", "--dry-run"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"{len(runs) - 1} offline W&B run(s) to sync" in out
    assert str(folders[0]) not in out and str(folders[1]) in out
