"""plan=true: each unit's cost and time on this machine, and no folder written."""

import re
import subprocess
import sys

from conftest import CONF, make_cfg

from mucs_pipeline import pipeline


def test_plan_times_each_unit_on_this_machine(tmp_path):
    cfg = make_cfg(tmp_path, "plan=true")
    out = pipeline.run(cfg)
    rate, rows = out["rate"], out["plan"]
    assert 0 < rate["forward"] < rate["train"]  # a training step also runs backward
    by_unit = {(r["stage"], r["method"]): r for r in rows}
    pretrain = by_unit["pretrain", ""]
    assert pretrain["seconds"] == pretrain["forwards"] * rate["train"]
    generate = by_unit["generate", ""]
    assert generate["seconds"] == generate["forwards"] * rate["forward"]
    mucs = by_unit["attribute", "mucs"]  # unlearning steps train, scoring only forwards
    assert generate["seconds"] < mucs["seconds"] < mucs["forwards"] * rate["train"]
    assert by_unit["attribute", "random"]["seconds"] == 0


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
