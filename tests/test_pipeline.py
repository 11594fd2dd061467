"""The whole pipeline on micro settings: artifacts, skipping, sharing between methods, CLI."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF, make_cfg, run_cli, write_cifar_batches, write_coco
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from mucs_pipeline import pipeline
from mucs_pipeline.artifacts import file_sha256
from mucs_pipeline.graph import STAGES
from mucs_pipeline.layout import Layout

ROOT = Path(__file__).resolve().parent.parent


def manifests(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("manifest.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = make_cfg(tmp)
    pipeline.run(cfg)
    return tmp, cfg


def test_full_run_writes_every_artifact(finished):
    tmp, cfg = finished
    layout = Layout(cfg)
    d = layout.dir
    assert (d("pretrain") / "ema.pt").exists() and (
        d("pretrain") / "checkpoints" / "last.ckpt"
    ).exists()
    items = torch.load(d("generate") / "items.pt", weights_only=True)
    assert items["target"]["images"].shape == (2, 1, 8, 8) and len(items["control"]["seeds"]) == 2
    assert (d("generate") / "items.png").exists()
    assert float((d("null_loss") / "loss_null.txt").read_text()) > 0
    for method in ("mucs", "random"):
        scores = torch.load(d("attribute", method) / "scores.pt", weights_only=True)
        assert scores["scores"].shape == (2, 120) and scores["scores"].dtype == torch.float32
        assert scores["seconds"].shape == (2,)
        removed = torch.load(d("retrain", method) / "removed.pt", weights_only=True)
        assert 6 <= len(removed) <= 12  # k = 5% of 120 = 6 per item, union of 2
        assert (d("retrain", method) / "ema.pt").exists()
        assert (d("regenerate", method) / "items.pt").exists()
    mucs_scores = torch.load(d("attribute", "mucs") / "scores.pt", weights_only=True)
    assert mucs_scores["steps"].shape == (2,) and len(mucs_scores["trajectories"]) == 2
    with open(d("evaluate") / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["method", "metric", "subset", "auc", "p_value", "n_items"]
    assert {(r["metric"], r["subset"]) for r in rows} == {
        (m, s) for m in ("ssim", "neg_mse") for s in ("target", "control")
    }
    assert all(0 <= float(r["auc"]) <= 1 and r["method"] == "mucs" for r in rows)
    assert "items_needed" in rows[0]  # 2 micro items are never significant: the power note
    results_md = (d("evaluate") / "results.md").read_text()
    assert "not significant with 2 items" in results_md
    run_json = json.loads((d("evaluate") / "run.json").read_text())
    diags = {x["diagnostic"]: x["value"] for x in run_json["diagnostics"]}
    drift = diags["drift: ssim of originals to random-removal regenerations"]
    (ssim,) = [r for r in rows if r["subset"] == "target" and r["metric"] == "ssim"]
    assert drift == pytest.approx(float(ssim["mean_similarity_random"]))
    assert 0 < diags["fit: F1's training loss / L_null (the same draws)"] < 2
    assert diags["mucs: unlearnings that hit method.max_steps"] == int(
        mucs_scores["hit_max_steps"].sum()
    )
    assert "Diagnostics of the setup:" in results_md and "fit: F1's training loss" in results_md
    assert (d("evaluate") / "results.md").exists() and (
        d("evaluate") / "regenerations.png"
    ).exists()
    for stage in STAGES:
        for manifest in (layout.root / stage).glob("*/manifest.json"):
            m = json.loads(manifest.read_text())
            assert m["wall_time_s"] >= 0 and m["outputs"]


def test_rerun_skips_finished_stages(finished):
    tmp, cfg = finished
    before = manifests(tmp)
    pipeline.run(cfg)
    assert manifests(tmp) == before


def test_stage_subset_and_force(finished):
    tmp, _ = finished
    before = manifests(tmp)
    pipeline.run(make_cfg(tmp, "stages=[evaluate]", "force=true"))
    after = manifests(tmp)
    changed = {k for k in after if after[k] != before[k]}
    assert changed and all(k.startswith("digits/seed0/evaluate/") for k in changed)


def test_other_method_reuses_pretraining_generations_and_random_retrain(finished):
    tmp, _ = finished
    before = manifests(tmp)
    pipeline.run(make_cfg(tmp, "method=pixel"))
    after = manifests(tmp)
    new = set(after) - set(before)
    assert all(after[k] == before[k] for k in before)  # nothing recomputed
    assert {Path(k).parts[2] for k in new} == {"attribute", "retrain", "regenerate", "evaluate"}
    assert all("pixel" in k for k in new)


@pytest.mark.slow  # make test-all; test_cfg_job_shows_the_prepared_config_that_runs: --cfg job
def test_cli_help_and_cfg_job():
    env_py = sys.executable
    help_out = subprocess.run(
        [env_py, "-m", "mucs_pipeline", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert help_out.returncode == 0 and "method" in help_out.stdout
    job = subprocess.run(
        [env_py, "-m", "mucs_pipeline", "+experiment=digits_pixel", "--cfg", "job"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert job.returncode == 0 and "name: pixel" in job.stdout and "lam" not in job.stdout


def test_cfg_job_shows_the_prepared_config_that_runs(tmp_path):
    """`--cfg job` prints what will run: debug=micro's method_settings on the method
    (max_steps 3, not mucs.yaml's 300), and writes no folder."""
    runs = tmp_path / "runs"
    out = run_cli(runs, "--cfg=job", "method.num_noises=5")
    assert out.returncode == 0, out.stderr[-2000:]
    method = OmegaConf.create(out.stdout).method
    assert method.max_steps == 3 and method.num_noises == 5  # the command line wins
    assert not runs.exists()


def test_the_prepared_config_is_read_only_and_leaves_the_composed_one_as_it_was(tmp_path):
    from mucs_pipeline.config import prepare

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose("config", overrides=["debug=micro", f"paths.runs_dir={tmp_path}"])
    cfg = prepare(raw)
    assert cfg.method.max_steps == 3 and raw.method.max_steps == 300
    assert prepare(cfg) is cfg and prepare(raw) is cfg  # prepared once per process
    with pytest.raises(ReadonlyConfigError):
        cfg.method.max_steps = 50


@pytest.mark.slow
def test_report_pools_the_items_of_every_seed(finished):
    from mucs_pipeline.report import report

    tmp, _ = finished
    pipeline.run(make_cfg(tmp, "seed=1"))
    (out,) = [p for p in report(tmp) if "-mucs-" in p.name]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["n_items"] for r in rows} == {"4"}  # 2 seeds x 2 items, targets and controls
    with open(tmp / json.loads((out / "runs.json").read_text())[0] / "results.csv") as f:
        assert {r["n_items"] for r in csv.DictReader(f)} == {"2"}


EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# Run end to end: every MUCS experiment (each dataset and diffusion variant) and every
# offline method on digits. CLIP and DINO need downloaded weights (their code paths run in
# test_baselines on random networks); the other paper-dataset baselines differ from the
# run ones only in the method, which test_method_experiments_change_only_the_method checks.
RUN_EXPERIMENTS = [
    e
    for e in EXPERIMENTS
    if "_mucs" in e or (e.startswith("digits_") and e not in ("digits_clip", "digits_dino"))
]


# The UNet experiments' networks at a CPU size (debug=micro's model_settings shrink a DiT only)
SMALL_UNETS = {
    "cifar10_mucs_unet": ["model.model_channels=16", "model.num_blocks=1"],
    **{
        e: ["model.config.block_out_channels=[16,16,16,16]", "model.config.norm_num_groups=8",
            "model.config.layers_per_block=1"]
        for e in ("cifar2_mucs", "cifar10_ddpm_mucs")
    },
}  # fmt: skip


def synthetic_data(experiment: str, root: Path) -> list[str]:
    """Small files in the real release formats for the paper datasets; overrides to use them."""
    if experiment.startswith("cifar"):
        write_cifar_batches(root / "cifar-10-batches-py", per_batch=8)
        out = [f"dataset.root={root}", "dataset.resolution=16", *SMALL_UNETS.get(experiment, [])]
        if experiment.startswith("cifar2"):  # two of the files' classes, 8 of their 16 images
            out += ["dataset.classes=[1,2]", "dataset.train_size=8"]
        return out
    if experiment.startswith("artbench10"):
        write_cifar_batches(
            root / "artbench-10-batches-py", side=64, per_batch=8, meta=("meta", "styles")
        )
        return [f"dataset.root={root}", "dataset.format=python", "dataset.resolution=16"]
    if experiment.startswith("coco"):
        write_coco(root, "train2017", 12)
        write_coco(root, "val2017", 6)
        return [
            f"dataset.root={root}",
            "dataset.clip_pretrained=null",  # the real text tower, randomly initialised
            f"dataset.cache_dir={root}/cache",
            "dataset.resolution=16",
        ]
    return []


# make test runs the default experiment (test_full_run_writes_every_artifact), each method
# (test_baselines) and each dataset (test_data); make test-all runs every experiment here.
@pytest.mark.slow
@pytest.mark.parametrize("experiment", RUN_EXPERIMENTS)
def test_every_experiment_config_runs_on_micro_settings(experiment, tmp_path):
    data = synthetic_data(experiment, tmp_path / "data")
    cfg = make_cfg(tmp_path, f"+experiment={experiment}", *data)
    pipeline.run(cfg)
    layout = Layout(cfg)
    with open(layout.dir("evaluate") / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(0 <= float(r["auc"]) <= 1 for r in rows)


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e not in RUN_EXPERIMENTS])
def test_method_experiments_change_only_the_method(experiment, tmp_path):
    cfg = make_cfg(tmp_path, f"+experiment={experiment}")
    method = cfg.method.name
    assert experiment.endswith(f"_{method}")  # <setup>_<method>, the setup's MUCS: <setup>_mucs
    base = make_cfg(tmp_path, f"+experiment={experiment[: -len(method)]}mucs")
    for key in ("dataset", "model", "diffusion", "pretrain", "generate", "evaluate"):
        assert cfg[key] == base[key], key


def test_force_recomputes_rather_than_resumes(finished):
    tmp, cfg = finished
    item = Layout(cfg).dir("attribute", "mucs") / "items" / "item0000.pt"
    before = item.stat().st_mtime_ns
    scores = torch.load(item, weights_only=True)["scores"]
    pipeline.run(make_cfg(tmp, "stages=[attribute]", "force=true"))
    assert item.stat().st_mtime_ns != before  # recomputed, not picked up from the last run
    assert torch.equal(torch.load(item, weights_only=True)["scores"], scores)  # deterministic


def test_a_changed_upstream_artifact_invalidates_what_was_built_from_it(finished):
    tmp, cfg = finished
    layout = Layout(cfg)
    assert layout.manifest("attribute", "mucs") is not None
    path = layout.dir("generate") / "manifest.json"
    items = layout.dir("generate") / "items.pt"
    original, original_items = path.read_text(), items.read_bytes()
    # As if generate had been recomputed with another result: new items, a matching manifest.
    changed = torch.load(items, weights_only=True)
    changed["target"]["images"] = changed["target"]["images"].flip(-1)
    torch.save(changed, items)
    manifest = json.loads(original)
    manifest["outputs"]["items.pt"] = file_sha256(items)
    path.write_text(json.dumps(manifest))
    try:
        assert layout.manifest("generate") is not None  # generate itself matches
        assert layout.manifest("attribute", "mucs") is None
        assert layout.manifest("evaluate") is None
        # Regeneration redraws the seeds through its retrained model: the items are not its input.
        assert layout.manifest("regenerate", "random") is not None
        assert layout.manifest("pretrain") is not None
    finally:
        path.write_text(original)
        items.write_bytes(original_items)
    assert layout.manifest("attribute", "mucs") is not None


def test_ensemble_reuses_the_score_artifacts_of_its_components(tmp_path):
    pipeline.run(
        make_cfg(
            tmp_path, "+experiment=digits_dtrak", "stages=[pretrain,generate,null_loss,attribute]"
        )
    )
    dtrak_dir = Layout(make_cfg(tmp_path, "+experiment=digits_dtrak")).dir("attribute", "dtrak")
    scores_file = dtrak_dir / "scores.pt"
    before = scores_file.stat().st_mtime_ns
    weights = [f"method.weights.{m}=0" for m in ("mucs", "das", "forward_inf", "condition")]
    cfg = make_cfg(
        tmp_path,
        "+experiment=digits_ensemble",
        *weights,
        "stages=[pretrain,generate,null_loss,attribute]",
    )
    pipeline.run(cfg)
    layout = Layout(cfg)
    assert layout.components("ensemble") == ["dtrak", "pixel"]
    assert layout.dir("attribute", "dtrak") == dtrak_dir
    assert scores_file.stat().st_mtime_ns == before  # read, not recomputed
    out = torch.load(layout.dir("attribute", "ensemble") / "scores.pt", weights_only=True)
    dtrak = torch.load(scores_file, weights_only=True)["scores"]
    assert out["scores"].shape == dtrak.shape and torch.isfinite(out["scores"]).all()
    assert out["setup_seconds"] >= 0 and out["seconds"].shape == (dtrak.shape[0],)
    manifest = json.loads((layout.dir("attribute", "ensemble") / "manifest.json").read_text())
    assert {"attribute[dtrak]", "attribute[pixel]"} <= set(manifest["inputs"])


@pytest.mark.slow
def test_a_finished_unit_leaves_no_network_behind(tmp_path, monkeypatch):
    """Each unit's networks are freed when it ends, not at some later collection: at
    DiT/B size every network left behind is gigabytes (OOM over a paper run otherwise)."""
    import gc

    from mucs_pipeline import runner
    from mucs_pipeline.models.dit import DiT

    alive, run = {}, runner._run

    def counted(layout, stage, method, what, folder, work):
        out = run(layout, stage, method, what, folder, work)
        # gc.get_objects() still lists objects in unreachable cycles that wait for collection
        alive[what] = sum(type(o) is DiT for o in gc.get_objects())
        return out

    monkeypatch.setattr(runner, "_run", counted)
    gc.collect()
    before = sum(type(o) is DiT for o in gc.get_objects())
    pipeline.run(make_cfg(tmp_path))
    assert {"pretrain", "retrain[mucs]", "retrain[random]"} <= set(alive)
    assert alive == {what: before for what in alive}
