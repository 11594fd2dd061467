"""The report command: the paper's tables and figures from a folder of finished runs."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import make_cfg, read_wandb_run

from mucs_pipeline import pipeline
from mucs_pipeline.report import find_comparisons, report_comparisons

TABLES = [
    "table1_auc",
    "table5_difference",
    "control",
    "table6_time",
    "table7_overlap_items",
    "table8_overlap_methods",
    "table3_ensembles",
    "table2_ablations",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of MUCS, one of pixel and one ensemble of the two, on micro settings."""
    tmp = tmp_path_factory.mktemp("report")
    for seed in (0, 1):
        pipeline.run(make_cfg(tmp, f"seed={seed}"))
    pipeline.run(make_cfg(tmp, "+experiment=digits_pixel"))
    weights = [f"method.weights.{m}=0" for m in ("das", "dtrak", "forward_inf", "condition")]
    pipeline.run(make_cfg(tmp, "+experiment=digits_ensemble", *weights))
    pipeline.run(make_cfg(tmp, "+ablation=u_c1_lam01"))
    return tmp


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_writes_every_table_and_figure(runs):
    (out,) = report_comparisons(runs)
    for table in TABLES:
        for ext in (".md", ".csv", ".tex"):
            assert (out / f"{table}{ext}").stat().st_size > 0, table + ext
    for metric in ("ssim", "neg_mse"):
        assert (out / f"fig_similarity_{metric}.png").exists()
        assert (out / f"fig_roc_{metric}.png").exists()
    for fig in ("fig_regenerations", "fig_mucs_trajectories", "fig_top_k_mucs", "fig_top_k_pixel"):
        assert (out / f"{fig}.png").exists(), fig
    auc = {r["method"]: r for r in rows(out / "table1_auc.csv")}
    assert set(auc) == {"pixel", "mucs", "ensemble", "mucs/u_c1_lam01"}
    assert auc["mucs"]["runs"] == "2" and auc["mucs"]["items"] == "4"  # 2 seeds x 2 items
    assert auc["pixel"]["items"] == "2"
    assert 0 <= float(auc["mucs"]["mean"]) <= 1
    times = {r["method"]: r for r in rows(out / "table6_time.csv")}
    assert float(times["mucs"]["minutes per item"]) > float(times["pixel"]["minutes per item"])
    ens = {r["method"]: r for r in rows(out / "table3_ensembles.csv")}
    assert ens["ensemble"]["mucs"] == "10" and ens["ensemble"]["pixel"] == "5"
    assert ens["mucs"]["mucs"] == "10" and ens["mucs"]["pixel"] == "0"
    overlap = {r["method"]: r for r in rows(out / "table8_overlap_methods.csv")}
    assert overlap["mucs"]["mucs"] == "-" and overlap["mucs"]["pixel"] == overlap["pixel"]["mucs"]
    assert "\\begin{tabular}" in (out / "table1_auc.tex").read_text()
    table1 = json.loads((out / "table1_auc.json").read_text())
    assert "ssim_p_best" in table1["columns"] and "†" in table1["caption"]
    (ablation,) = [r for r in rows(out / "table2_ablations.csv") if r["row"] == "U-C1"]
    assert ablation["method"] == "mucs/u_c1_lam01" and ablation["delta %"].endswith("%")


@pytest.mark.slow
def test_a_new_report_removes_the_figures_of_labels_it_no_longer_writes(runs):
    (out,) = [p for p in report_comparisons(runs) if (p / "table3_ensembles.csv").exists()]
    for stale in ("fig_top_k_mucs-old.png", "table9_gone.md"):  # a renamed row, a dropped table
        (out / stale).write_text("from an older report")
    (out / "wandb").mkdir(exist_ok=True)  # not the report's tables or figures: kept
    report_comparisons(runs)
    assert not (out / "fig_top_k_mucs-old.png").exists() and not (out / "table9_gone.md").exists()
    assert (out / "fig_top_k_mucs.png").exists() and (out / "table1_auc.md").exists()
    assert (out / "wandb").is_dir()


@pytest.mark.slow
def test_runs_of_other_settings_form_another_comparison(runs):
    assert len(find_comparisons(runs)) == 1
    pipeline.run(make_cfg(runs, "evaluate.k_fraction=0.1", "method=pixel"))
    groups = find_comparisons(runs)
    assert len(groups) == 2
    assert sorted(len(g) for g in groups.values()) == [1, 4]


@pytest.mark.slow
def test_report_command_line(runs):
    out = subprocess.run(
        [sys.executable, "-m", "mucs_pipeline.report", str(runs)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "AUC against random removal" in out
    assert "comparison" in out


@pytest.mark.slow
def test_offline_wandb_runs_hold_the_tables_and_images(runs, monkeypatch):
    from mucs_pipeline.report import log_report_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # The evaluate stage with logger=wandb: one offline run per job, job type = stage.
    cfg = make_cfg(runs, "logger=wandb", "stages=[evaluate]", "force=true")
    pipeline.run(cfg)
    from mucs_pipeline.layout import Layout

    run_dirs = list((Layout(cfg).dir("evaluate") / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    files = {p.name for p in run_dirs[0].rglob("*") if p.is_file()}
    assert any(f.startswith("results") and f.endswith(".table.json") for f in files)
    assert any(f.startswith("regenerations") and f.endswith(".png") for f in files)
    assert any(f.startswith("similarity_ssim") and f.endswith(".png") for f in files)
    # The report's tables and figures.
    (out,) = [p for p in report_comparisons(runs) if (p / "table3_ensembles.csv").exists()]
    log_report_wandb("digits", "test", out)
    (report_run,) = list((out / "wandb").glob("offline-run-*"))
    logged = read_wandb_run(report_run)
    assert "fig_roc_ssim" in logged["images"] and "fig_regenerations" in logged["images"]
    # Numbers in their own columns (value, CI, p), so that W&B sorts and plots them.
    auc = logged["tables"]["table1_auc"]
    assert {"ssim", "ssim_p", "neg_mse", "mean"} <= set(auc["columns"])
    for row in auc["data"]:
        cells = dict(zip(auc["columns"], row, strict=True))
        assert 0 <= cells["ssim"] <= 1 and 0 <= cells["ssim_p"] <= 1
    diff = logged["tables"]["table5_difference"]
    assert {"ssim", "ssim_ci"} <= set(diff["columns"])
    assert all(isinstance(v, float) for row in diff["data"] for v in row[3:])
    time = logged["tables"]["table6_time"]
    assert "seconds per item_ci" in time["columns"]


def test_training_stages_log_to_an_offline_wandb_run(tmp_path, monkeypatch):
    from mucs_pipeline.layout import Layout

    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path, "logger=wandb", "stages=[pretrain]")
    pipeline.run(cfg)
    (run_dir,) = list((Layout(cfg).dir("pretrain") / "wandb").glob("offline-run-*"))
    assert any(p.suffix == ".wandb" for p in run_dir.iterdir())  # the run's event log


@pytest.mark.slow
def test_a_lambda_sweep_gives_one_row_per_lambda_not_a_pooled_one(runs, tmp_path):
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(runs, copy, ignore=shutil.ignore_patterns("report", "wandb"))
    pipeline.run(make_cfg(copy, "method.lam=0.3"))
    (by_label,) = [g for g in find_comparisons(copy).values() if "mucs/u_c1_lam01" in g]
    assert "mucs" not in by_label  # lambda 0.2 (two seeds) and 0.3 (one) are not pooled
    assert [r["seed"] for r in by_label["mucs[lam=0.2]"]] == [0, 1]
    assert [r["seed"] for r in by_label["mucs[lam=0.3]"]] == [0]
    assert "mucs/u_c1_lam01" in by_label  # the ablation keeps its own row


def test_the_marker_against_the_best_other_method(tmp_path):
    """† (the paper's Table 1 marker): a one-sided U test against the other method with the
    highest AUC, never against an ablation of the same method."""
    import torch
    from scipy.stats import mannwhitneyu

    from mucs_pipeline.evaluation.comparison import Comparison, _auc

    gen = torch.Generator().manual_seed(0)
    noise = lambda: 0.4 * torch.rand(40, generator=gen)  # noqa: E731
    random = 0.6 + noise()  # AUCs against it: mucs/abl > mucs > pixel
    sims = {"mucs": 0.3 + noise(), "pixel": 0.45 + noise(), "mucs/abl": 0.1 + noise()}
    by_label = {}
    for label, values in sims.items():
        method = label.split("/")[0]
        folder = tmp_path / label.replace("/", "-")
        folder.mkdir()
        torch.save({method: {"ssim": values}, "random": {"ssim": random}},
                   folder / "similarities_target.pt")  # fmt: skip
        run = {"method": method, "method_cfg": {"name": method}, "folder": folder,
               "removed": {method: 10, "random": 10}, "k": 5, "seed": 0}  # fmt: skip
        by_label[label] = [run]
    c = Comparison("digits", by_label, alpha=0.01)
    mucs, pixel = c.by_metric("mucs")["ssim"], c.by_metric("pixel")["ssim"]
    # mucs/abl, the best row, is MUCS itself for mucs; for pixel it is another method.
    assert mucs["best_other"] == "pixel" and pixel["best_other"] == "mucs/abl"
    expected = mannwhitneyu(sims["pixel"], sims["mucs"], alternative="greater").pvalue
    assert mucs["p_vs_best"] == pytest.approx(expected) and expected < 0.01
    assert pixel["p_vs_best"] > 0.5
    assert str(_auc(mucs)).endswith("*†") and str(_auc(pixel)).endswith("*")
    assert not str(_auc(pixel)).endswith("†")


@pytest.mark.slow
def test_bf16_scores_are_another_setting_not_pooled_with_float32_ones(runs, tmp_path):
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(runs, copy, ignore=shutil.ignore_patterns("report", "wandb"))
    pipeline.run(make_cfg(copy, "trainer.bf16_scoring=true"))
    pipeline.run(make_cfg(copy, "+experiment=digits_pixel", "trainer.bf16_scoring=true"))
    (by_label,) = [g for g in find_comparisons(copy).values() if "mucs/u_c1_lam01" in g]
    assert [r["seed"] for r in by_label["mucs[bf16_scores=False]"]] == [0, 1]
    assert [r["seed"] for r in by_label["mucs[bf16_scores=True]"]] == [0]
    assert [r["seed"] for r in by_label["pixel"]] == [0]  # no network losses: the same run


def test_runs_whose_keys_differ_in_nothing_recorded_keep_rows_of_their_own():
    from mucs_pipeline.report import _split_settings

    run = {"method_cfg": {"name": "mucs", "lam": 0.2}, "seed": 0}
    by_label = _split_settings({"mucs": [{**run, "experiment_key": k} for k in ("a1", "b2")]})
    assert sorted(by_label) == ["mucs[key=a1]", "mucs[key=b2]"]  # never one over the other
