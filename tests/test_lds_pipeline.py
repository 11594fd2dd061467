"""LDS as stages of the pipeline (lds=on): artifacts, resume and content hashes, every
method, the stacked trainer against the Lightning one, the loss bank's levels."""

import json
from pathlib import Path

import pytest
import torch
from conftest import make_cfg, slow_unless

from mucs_pipeline import pipeline
from mucs_pipeline.artifacts import config_hash, file_sha256
from mucs_pipeline.data import build_dataset
from mucs_pipeline.errors import ConfigError
from mucs_pipeline.evaluation.lds import ceiling, lds
from mucs_pipeline.layout import Layout
from mucs_pipeline.models import DDPM, EDM, Flow, build_diffusion
from mucs_pipeline.stacked import train_stacked
from mucs_pipeline.stages.lds import gather_outputs
from mucs_pipeline.training import init_model, train

LDS = [
    "lds=on",
    "lds.num_subsets=6",
    "lds.replicates=2",  # the two-seed ceiling
    "lds.models_per_pass=4",  # two lds_train units: 4 and 8 models of 12
    "lds.queries=both",
    "lds.num_heldout=3",
    "lds.bank.levels=10",
    "lds.bank.noises=2",
    "lds.resamples=50",
    "stages=[pretrain,generate,null_loss,attribute,lds_subsets,lds_train,lds_heldout,"
    "lds_attribute,lds_outputs,lds]",
]


def manifests(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("manifest.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lds")
    cfg = make_cfg(tmp, *LDS)
    pipeline.run(cfg)
    return tmp, cfg


def lds_results(cfg, method: str) -> dict:
    return json.loads((Layout(cfg).dir("lds", method) / "lds.json").read_text())["queries"]


def test_lds_run_writes_every_artifact(finished):
    _, cfg = finished
    d = Layout(cfg).dir
    members = torch.load(d("lds_subsets") / "subsets.pt", weights_only=True)["members"]
    assert members.shape == (6, 120) and (members.sum(1) == 60).all()
    assert len({tuple(row.tolist()) for row in members}) == 6  # six different subsets
    units = Layout(cfg).units("lds_train")
    assert units == ["models0000-0003", "models0004-0007", "models0008-0011"]
    saved = torch.load(d("lds_train", units[1]) / "models.pt", weights_only=True)
    assert saved["models"] == [(2, 0), (2, 1), (3, 0), (3, 1)] and len(saved["ema"]) == 4
    # Two replicates of one subset are trained with other seeds: other weights.
    w = "out.weight"
    assert not torch.equal(saved["ema"][0][w], saved["ema"][1][w])
    unit_out = torch.load(d("lds_outputs", units[1]) / "outputs.pt", weights_only=True)
    assert unit_out["models"] == saved["models"]  # one outputs unit per lds_train unit
    assert unit_out["outputs"]["heldout"].shape == (4, 3)  # 4 models x 3 queries
    assert unit_out["levels"].shape == (10,) and unit_out["noises"] == 2
    out = {"outputs": gather_outputs(cfg, Layout(cfg))}
    assert out["outputs"]["generated"].shape == (6, 2, 2)
    assert out["outputs"]["heldout"].shape == (6, 2, 3)
    assert all(torch.isfinite(o).all() and (o > 0).all() for o in out["outputs"].values())
    assert torch.equal(out["outputs"]["heldout"][2:4].flatten(0, 1), unit_out["outputs"]["heldout"])
    for method in ("mucs", "random"):
        res = lds_results(cfg, method)
        assert set(res) == {"generated", "heldout"}
        for q, r in res.items():
            # The unit's LDS is the library's, on the stored scores, subsets and losses
            # (replicates averaged).
            stage = "attribute" if q == "generated" else "lds_attribute"
            scores = torch.load(d(stage, method) / "scores.pt", weights_only=True)["scores"]
            expected = lds(scores, members, out["outputs"][q].double().mean(1).numpy())
            assert r["lds"] == pytest.approx(expected["lds"]), (method, q)
            assert r["ci_low"] <= r["lds"] <= r["ci_high"] or r["ci_low"] < r["ci_high"]
            agreement = ceiling(*out["outputs"][q].double().unbind(1))
            assert r["replicate_agreement"] == pytest.approx(agreement)
            assert abs(r["ceiling"]) >= abs(agreement)  # the mean of two is less noisy
            assert r["num_subsets"] == 6
        assert (d("lds", method) / "scatter_heldout.png").exists()
    assert not (d("lds_train", units[0]) / "checkpoints").exists()  # served: removed
    heldout = torch.load(d("lds_attribute", "mucs") / "scores.pt", weights_only=True)
    assert heldout["scores"].shape == (3, 120)


def test_rerun_skips_every_lds_unit(finished, capsys):
    tmp, cfg = finished
    before = manifests(tmp)
    pipeline.run(cfg)
    assert manifests(tmp) == before
    out = capsys.readouterr().out
    res = lds_results(cfg, "mucs")["heldout"]
    assert f"- mucs, heldout (3 queries): {res['lds']:.3f}" in out  # the run's summary
    assert "ceiling" in out and "two-seed agreement" in out


def test_plan_lists_the_lds_units_and_their_cost(finished):
    from mucs_pipeline import plan

    tmp, _ = finished
    cfg = make_cfg(tmp, *LDS, "lds.num_subsets=8")
    rows = plan.units(cfg, Layout(cfg), 120, True)
    train = [r for r in rows if r["stage"] == "lds_train"]
    assert [r["state"] for r in train] == ["skip", "skip", "skip", "run"]  # S 6 -> 8
    assert all(r["steps"] == 4 * 6 for r in train)  # 4 models x 12 x 0.5 steps
    assert train[0]["forwards"] == 4 * 6 * 60  # each step a batch of its 60-item subset
    outputs = [r for r in rows if r["stage"] == "lds_outputs"]
    assert [r["state"] for r in outputs] == ["skip", "skip", "skip", "run"]
    assert all(r["forwards"] == 4 * (2 + 3) * 10 * 2 for r in outputs)  # models x queries x bank
    assert {r["method"] for r in rows if r["stage"] == "lds_attribute"} == {"mucs", "random"}


def test_changed_subsets_invalidate_the_scores_built_on_them(finished):
    """Content hashes: subsets recomputed with another result (a matching manifest) leave
    the lds units that read them stale, and only those (the subset models draw their own
    subsets from the same streams, by subset: their key says which)."""
    _, cfg = finished
    layout = Layout(cfg)
    folder = layout.dir("lds_subsets")
    path, manifest_path = folder / "subsets.pt", folder / "manifest.json"
    original, original_manifest = path.read_bytes(), manifest_path.read_text()
    subsets = torch.load(path, weights_only=True)
    subsets["members"] = subsets["members"].roll(1, dims=0)
    torch.save(subsets, path)
    manifest = json.loads(original_manifest)
    manifest["outputs"]["subsets.pt"] = file_sha256(path)
    manifest_path.write_text(json.dumps(manifest))
    try:
        assert layout.manifest("lds_subsets") is not None  # the subsets unit itself matches
        assert layout.manifest("lds", "mucs") is None and layout.manifest("lds", "random") is None
        assert all(layout.manifest("lds_train", u) is not None for u in layout.units("lds_train"))
        assert all(
            layout.manifest("lds_outputs", u) is not None for u in layout.units("lds_outputs")
        )
    finally:
        path.write_bytes(original)
        manifest_path.write_text(original_manifest)
    assert layout.manifest("lds", "mucs") is not None


def test_more_subsets_reuse_the_models_already_trained(finished):
    tmp, cfg = finished
    more = make_cfg(tmp, *LDS, "lds.num_subsets=8")
    small, large = Layout(cfg), Layout(more)
    assert large.units("lds_train")[:3] == small.units("lds_train")
    for unit in small.units("lds_train"):
        assert large.key("lds_train", unit) == small.key("lds_train", unit)
        assert large.manifest("lds_train", unit) is not None  # finished: not trained again
    assert large.state("lds_train", large.units("lds_train")[3]) == "run"
    recorded = torch.load(small.dir("lds_subsets") / "subsets.pt", weights_only=True)["members"]
    from mucs_pipeline.evaluation.lds import draw_subsets

    assert torch.equal(draw_subsets(120, 8, 0.5, 0)[:6], recorded)


@pytest.mark.parametrize(
    "method",
    slow_unless(
        ["pixel", "condition", "dtrak", "das", "forward_inf", "abu", "ensemble"], ["pixel"]
    ),
)
def test_every_method_has_an_lds(finished, method):
    """Each method scores every training item for every query, and its LDS is measured
    on the subset models the run already trained (none is trained again)."""
    tmp, _ = finished
    # digits' ensemble: pixel similarity in DINO's and CLIP's place (no weights offline)
    chosen = "+experiment=digits_ensemble" if method == "ensemble" else f"method={method}"
    cfg = make_cfg(tmp, *LDS, chosen)
    before = manifests(tmp)
    pipeline.run(cfg)
    after = manifests(tmp)
    new = {k.split("/")[2] for k in after if k not in before}
    assert "lds_train" not in new and "lds_outputs" not in new
    res = lds_results(cfg, method)
    assert all(-1 <= r["lds"] <= 1 for r in res.values()) and set(res) == {"generated", "heldout"}


def test_generated_queries_with_one_model_per_subset(finished, capsys):
    """The defaults' shape: generated queries only, one model per subset, no ceiling; no
    held-out unit is made or read."""
    tmp, _ = finished
    cfg = make_cfg(tmp, *LDS, "lds.queries=generated", "lds.replicates=1")
    pipeline.run(cfg)
    layout = Layout(cfg)
    assert layout.units("lds_heldout") == [] and layout.units("lds_attribute") == []
    unit = layout.units("lds_outputs")[0]
    assert "lds_heldout" not in layout.manifest("lds_outputs", unit)["input_hashes"]
    res = lds_results(cfg, "mucs")
    assert set(res) == {"generated"} and res["generated"]["ceiling"] is None
    assert "- mucs, generated (2 queries)" in capsys.readouterr().out


def test_tune_split_draws_other_subsets_and_queries(finished):
    _, cfg = finished
    tune = make_cfg(finished[0], *LDS, "lds.split=tune")
    lay, lay_tune = Layout(cfg), Layout(tune)
    assert lay.key("lds_subsets") != lay_tune.key("lds_subsets")
    from mucs_pipeline.evaluation.lds import draw_subsets
    from mucs_pipeline.stages.lds_heldout import heldout_items

    a, b = draw_subsets(120, 6, 0.5, 0), draw_subsets(120, 6, 0.5, 0, "tune")
    assert not any(torch.equal(x, y) for x in a for y in b)
    ids = heldout_items(cfg)["target"]["seeds"]
    tune_ids = heldout_items(tune)["target"]["seeds"]
    assert not set(ids.tolist()) & set(tune_ids.tolist())


@pytest.mark.parametrize(
    "override",
    slow_unless(
        ["diffusion=edm", "diffusion=ddpm", "diffusion=flow", "pretrain.augment.p=0.5"],
        ["diffusion=edm"],
    ),
)
def test_stacked_training_matches_training_alone(tmp_path, override):
    """Two subset models trained together equal each trained alone by the Lightning path
    on its subset with the same stream: the same losses on fixed draws (parameters whose
    gradient is zero in exact arithmetic, biases before a norm, may differ: Adam scales
    their rounding noise to full steps)."""
    cfg = make_cfg(tmp_path, "pretrain.warmup_steps=5", "pretrain.ema_decay=0.9", override)
    data, diffusion = build_dataset(cfg.dataset), build_diffusion(cfg.diffusion)
    subsets = [torch.randperm(len(data), generator=torch.Generator().manual_seed(i))[:60]
               for i in range(2)]  # fmt: skip
    stacked, _ = train_stacked(cfg, data, diffusion, subsets, [0, ("other", 1)], 20)
    alone = train(cfg, data.subset(subsets[0]), diffusion, tmp_path / "alone", 20).eval()
    net = init_model(cfg, data, 0)
    net.load_state_dict(stacked[0])
    gen = torch.Generator().manual_seed(5)
    x, cond = data.x[:50], data.cond[:50]
    sigma, noise = diffusion.training_sigma(50, gen), torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        a, b = (
            diffusion.loss(alone, x, cond, sigma, noise),
            diffusion.loss(net.eval(), x, cond, sigma, noise),
        )
        init = diffusion.loss(init_model(cfg, data, 0), x, cond, sigma, noise)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(a, init, rtol=1e-2)  # 20 steps moved it: the check has teeth
    other = init_model(cfg, data, 0)
    other.load_state_dict(stacked[1])
    with torch.no_grad():
        c = diffusion.loss(other.eval(), x, cond, sigma, noise)
    assert not torch.allclose(b, c, rtol=1e-3)  # the second model is its own


def test_stacked_training_resumes_exactly(tmp_path):
    cfg = make_cfg(tmp_path, "pretrain.checkpoint_every=5", "trainer.log_every_n_steps=2")
    data, edm = build_dataset(cfg.dataset), EDM()
    subsets = [torch.arange(0, 60), torch.arange(60, 120)]
    whole, history = train_stacked(cfg, data, edm, subsets, [0, 1], 12)
    ckpt = tmp_path / "last.pt"
    train_stacked(cfg, data, edm, subsets, [0, 1], 5, checkpoint=ckpt)  # killed after 5
    resumed, resumed_history = train_stacked(cfg, data, edm, subsets, [0, 1], 12, checkpoint=ckpt)
    for a, b in zip(whole, resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed_history == history and len(history) == 6


def test_bank_levels_stratify_the_training_distribution():
    u = (torch.arange(1000) + 0.5) / 1000
    assert torch.equal(DDPM().training_quantile(u), torch.arange(1000).double())  # D-TRAK
    edm = EDM()
    med = edm.training_quantile(torch.tensor([0.5]))
    assert med.item() == pytest.approx(torch.tensor(edm.P_mean).exp().item(), rel=1e-6)
    draws = edm.training_sigma(200_000, torch.Generator().manual_seed(0))
    q = edm.training_quantile(torch.tensor([0.1, 0.9]))
    assert torch.quantile(draws, torch.tensor([0.1, 0.9])) == pytest.approx(q, rel=0.02)
    flow = Flow()
    t = flow.training_quantile(u)
    assert (t > 0).all() and (t < 1).all() and (t.diff() > 0).all()


@pytest.mark.parametrize(
    "override, message",
    [
        ("lds.queries=some", "lds.queries='some'"),
        ("lds.alpha=1.5", "lds.alpha=1.5: expected a fraction"),
        ("lds.alpha=0.001", "lds.alpha=0.001: a subset keeps 0 of the 120"),
        ("lds.num_subsets=2", "lds.num_subsets=2: expected an integer >= 3"),
        ("pretrain.patience=3", "lds=on: the subset models train a fixed number of steps"),
        ("trainer.devices=2", "lds=on: its subset models train in one process"),
        ("lds.queries=heldout dataset.subset=null", "dataset 'digits' has no test split"),
    ],
)
def test_bad_lds_settings_are_refused_before_any_compute(tmp_path, override, message):
    from mucs_pipeline.config import prepare

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        prepare(make_cfg(tmp_path, "lds=on", *override.split()))
    assert not any(tmp_path.iterdir())


def test_report_writes_the_lds_table_figures_and_agreement(finished, capsys):
    tmp, cfg = finished
    from mucs_pipeline.lds_report import report_lds

    written = report_lds(tmp)  # one table per set of subset models' outputs
    lay = Layout(cfg)
    key = config_hash(*sorted(lay.key("lds_outputs", u) for u in lay.units("lds_outputs")))
    [(name, out)] = [(n, o) for n, k, o in written if k == key]
    assert name == "digits" and out.name.startswith("lds-digits-seed0-")
    table = json.loads((out / "table_lds.json").read_text())
    rows = {r[0]: dict(zip(table["columns"], r, strict=True)) for r in table["data"]}
    assert {"mucs", "random"} <= set(rows)
    assert rows["mucs"]["lds_generated"] == pytest.approx(
        lds_results(cfg, "mucs")["generated"]["lds"]
    )
    assert rows["mucs"]["auc"] is None  # no evaluate stage in this run
    assert (out / "fig_lds.png").exists() and (out / "fig_scatter_heldout_mucs.png").exists()
    assert "Ceiling (the LDS of retraining itself" in (out / "table_lds.md").read_text()


def test_agreement_is_kendalls_tau_of_the_two_orderings():
    from mucs_pipeline.lds_report import agreement

    columns = ["method", "lds_generated", "auc"]
    same = [["a", 0.3, 0.9], ["b", 0.2, 0.8], ["c", 0.1, 0.7], ["random", 0.0, 0.5]]
    assert "tau between" in agreement(columns, same) and ": 1.000" in agreement(columns, same)
    flipped = [[m, lds, 1.6 - auc] for m, lds, auc in same[:3]]
    assert ": -1.000" in agreement(columns, flipped)
    assert "needs three or more" in agreement(columns, same[:2])


def test_an_lds_unit_logs_its_numbers_to_wandb(finished, monkeypatch):
    """Last in this file: it recomputes the lds units (force=true), with the same result."""
    from conftest import read_wandb_run

    from mucs_pipeline import tracking

    tmp, cfg = finished
    monkeypatch.setenv("WANDB_MODE", "offline")
    before = lds_results(cfg, "mucs")
    pipeline.run(make_cfg(tmp, *LDS, "logger=wandb", "stages=[lds]", "force=true"))
    assert lds_results(cfg, "mucs") == before  # the bootstrap is seeded
    folder = Layout(cfg).dir("lds", "mucs")
    (run,) = [read_wandb_run(f) for f in tracking.offline_runs(folder)]
    assert run["job_type"] == "lds"
    assert run["summary"]["generated/lds"] == pytest.approx(before["generated"]["lds"])
    assert "spearman_heldout" in run["tables"] and "scatter_generated" in run["images"]
