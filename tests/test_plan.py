"""plan=true: each unit's cost and time on this machine, and no folder written."""

import re
import subprocess
import sys

import pytest
from conftest import CONF, make_cfg

from mucs_pipeline import pipeline


def test_plan_times_each_unit_on_this_machine(tmp_path):
    cfg = make_cfg(tmp_path, "plan=true")
    out = pipeline.run(cfg)
    rate, rows = out["rate"], out["plan"]
    assert rate["forward"] > 0 and rate["train"] > 0  # timed at different batches (see below)
    by_unit = {(r["stage"], r["method"]): r for r in rows}
    pretrain = by_unit["pretrain", ""]  # training steps, then F1's fit on L_null's draws
    fit = min(cfg.null_loss.batch_size, 120) * cfg.null_loss.num_batches
    trained = pretrain["forwards"] - fit
    assert trained == pretrain["steps"] * min(cfg.pretrain.batch_size, 120)
    assert pretrain["seconds"] == pytest.approx(trained * rate["train"] + fit * rate["forward"])
    retrain = by_unit["retrain", "mucs"]
    assert retrain["seconds"] == retrain["forwards"] * rate["train"]
    generate = by_unit["generate", ""]
    assert generate["seconds"] == generate["forwards"] * rate["forward"]
    mucs = by_unit["attribute", "mucs"]  # unlearning steps train, scoring only forwards
    assert generate["seconds"] < mucs["seconds"] < mucs["forwards"] * rate["train"]
    assert by_unit["attribute", "random"]["seconds"] == 0


@pytest.mark.slow
def test_plan_on_the_command_line_writes_no_folder(tmp_path):
    runs = tmp_path / "runs"
    out = subprocess.run(
        [sys.executable, "-m", "mucs_pipeline", "debug=micro", "plan=true", "logger=csv",
         f"paths.runs_dir={runs}"],
        cwd=CONF.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert not runs.exists()  # not even Hydra's log folder
    assert re.search(
        r"^pretrain +run +[\d,]+ +12 +[\d.]+ (h \d+ min|min \d+ s|s) ", out.stdout, re.M
    )
    assert re.search(r"about .+ on this machine", out.stdout)


def test_a_fast_network_is_timed_at_the_batches_its_work_uses(tmp_path):
    """The batch grows from 32 to the work's own while calls stay within the budget: a
    tiny network's per-call overheads weigh as they will (at 32, digits' plan was 10x slow)."""
    from mucs_pipeline.plan import measure
    from mucs_pipeline.stages.common import dataset

    cfg = make_cfg(tmp_path)
    data = dataset(cfg)
    grown = measure(cfg, data, call_budget=float("inf"))
    assert (grown["train_batch"], grown["forward_batch"]) == (cfg.pretrain.batch_size, 2000)
    kept = measure(cfg, data, call_budget=0.0)
    assert (kept["train_batch"], kept["forward_batch"]) == (32, 32)
