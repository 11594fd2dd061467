"""A quiet terminal: no W&B banners, each warning once, plain progress lines in a log,
a total time, and one combined table at the end of a multirun."""

import re

import pytest
from conftest import make_cfg, read_wandb_run, run_cli

from mucs_pipeline import pipeline, terminal, tracking


@pytest.mark.slow
def test_a_multirun_is_quiet_and_ends_with_one_table_of_every_job(tmp_path):
    out = run_cli(tmp_path, "-m", "logger=wandb", "trainer.progress_bar=true", "method.lam=0.1,0.3")
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "wandb:" not in text  # banners, run summaries and sync hints
    assert text.count("LeafSpec") <= 1  # Lightning's deprecation, once per process
    assert "\r" not in text  # not a terminal: no progress bars
    assert len(re.findall(r"^done in \d", out.stdout, re.M)) == 2  # one per job
    table = out.stdout[out.stdout.index("All 2 jobs of this multirun") :]
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 2
    assert "method.lam=0.1" in rows[0] and "method.lam=0.3" in rows[1]
    assert "dataset.subset" not in table  # overrides common to every job are left out
    assert re.search(r"\| 0\.\d{3} \([\d.e-]+\) \|", rows[0])  # AUC (p) per metric
    assert "multirun done in" in table
    # The jobs' W&B runs: tagged with the multirun, named and tagged by lambda.
    sweep = re.search(r"multirun/([\w-]+)\)", table).group(1)
    evaluations = [
        read_wandb_run(f) for f in tracking.offline_runs(tmp_path) if "/evaluate/" in str(f)
    ]
    assert sorted(r["name"].split("-seed")[0] for r in evaluations) == [
        "digits-evaluate-mucs-lam0.1", "digits-evaluate-mucs-lam0.3"
    ]  # fmt: skip
    assert all(f"sweep:{sweep}" in r["tags"] for r in evaluations)
    assert len({r["group"] for r in evaluations}) == 1  # lambdas compare in one group


def test_progress_is_plain_lines_when_output_is_not_a_terminal(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(terminal, "PLAIN_EVERY_S", 0.0)  # a line at every update
    caplog.set_level("INFO", logger="mucs_pipeline.progress")
    pipeline.run(
        make_cfg(
            tmp_path, "trainer.progress_bar=true", "stages=[pretrain,generate,null_loss,attribute]"
        )
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "mucs_pipeline.progress"]
    assert any(
        re.fullmatch(r"pretrain: \d+/12 steps \(\d+%\), [\d.]+ s(, ~.* left)?", x) for x in lines
    )
    assert "attribute mucs: 1/2 items (50%)" in " ".join(lines)


def test_durations_read_as_a_person_would_say_them():
    assert terminal.duration(12.34) == "12.3 s"
    assert terminal.duration(245) == "4 min 05 s"
    assert terminal.duration(2 * 3600 + 3 * 60 + 20) == "2 h 03 min"
