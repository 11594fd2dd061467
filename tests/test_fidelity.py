"""The paper's protocol, and the authors' release where the paper is silent (docs/fidelity.md)."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import CONF, make_cfg, perturb, write_cifar_batches, write_coco
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mucs_pipeline import augment, rng
from mucs_pipeline.attribution.unlearn import ScheduleDraws, unlearn
from mucs_pipeline.data import build_dataset
from mucs_pipeline.models import EDM, build_model
from mucs_pipeline.training import init_model

PAPER = ("cifar10_mucs", "artbench10_mucs", "coco_mucs")
RECIPE = {"p": 0.12, "xflip": True, "ops": list(augment.OPS)}


def compose_experiment(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# --- The network and L_null -------------------------------------------------------------


@pytest.mark.parametrize("experiment", ["digits_mucs", "cifar10_mucs"])
def test_a_fresh_network_outputs_exactly_zero(experiment):
    cfg = compose_experiment(f"+experiment={experiment}")
    res = 8 if experiment == "digits_mucs" else 32
    channels, cond_dim = (1, 10) if experiment == "digits_mucs" else (3, 0)
    net = build_model(cfg.model, res, channels, cond_dim).eval()
    x = torch.randn(2, channels, res, res)
    cond = torch.eye(cond_dim)[:2] if cond_dim else None
    assert torch.equal(net(x, torch.randn(2), cond), torch.zeros_like(x))
    # So the EDM denoiser of a fresh network is its skip path alone: D = c_skip x.
    sigma = torch.tensor([0.5, 3.0])
    c_skip = EDM().precond(sigma)[0].reshape(-1, 1, 1, 1)
    assert torch.allclose(EDM().predict(net, x, cond, sigma), c_skip * x)
    literal = build_model(OmegaConf.merge(cfg.model, {"zero_init_output": False}), res,
                          channels, cond_dim)  # fmt: skip
    assert literal.out.weight.abs().sum() > 0  # PyTorch's default init, the paper read literally


def test_loss_null_is_the_loss_of_the_skip_path_over_2000_draws(tmp_path):
    from mucs_pipeline.stages.null_loss import estimate_loss_null

    cfg = make_cfg(tmp_path, "null_loss.num_batches=3", "model.zero_init_output=true")
    data, edm = build_dataset(cfg.dataset), EDM()
    expected, count = 0.0, 0
    for i in range(3):  # the same draws, through D = c_skip x
        gen = rng.generator("null-loss", cfg.seed, i)
        idx = torch.randperm(len(data), generator=gen)[: cfg.null_loss.batch_size]
        sigma = edm.training_sigma(len(idx), gen)
        noise = torch.randn((len(idx), *data.x.shape[1:]), generator=gen)
        x = data.x[idx]
        c_skip = edm.precond(sigma)[0].reshape(-1, 1, 1, 1)
        err = (c_skip * (x + sigma.reshape(-1, 1, 1, 1) * noise) - x).square().flatten(1).mean(1)
        expected += (edm.loss_weight(sigma) * err).sum().item()
        count += len(idx)
    assert estimate_loss_null(cfg, data, edm) == pytest.approx(expected / count, rel=1e-5)
    # App. A.1: num_null = 20 batches of b = 100 ("a few thousand" draws, Sec. 2.2).
    default = compose_experiment()
    assert default.null_loss.num_batches * default.null_loss.batch_size == 2000


# --- Unlearning ------------------------------------------------------------------------


def unlearn_micro(tmp_path, *overrides: str, loss_null: float = 1.6, spy=None):
    """F1 (a perturbed fresh micro DiT with dropout) and F2 unlearned from it."""
    cfg = make_cfg(tmp_path, "model.dropout=0.1", "pretrain.cond_drop=0.9", *overrides)
    data = build_dataset(cfg.dataset)
    f1 = perturb(init_model(cfg, data, cfg.seed), scale=0.02).eval()
    edm = EDM()
    if spy is not None:
        edm.loss = spy(edm.loss)
    f2, info = unlearn(
        f1, data.x[0], data.cond[:1], data, edm, loss_null, cfg.method, cfg, stream=(0, 0)
    )
    return f1, f2, info, data


def test_unlearning_runs_in_eval_mode_with_own_conditions_and_frozen_biases(tmp_path):
    calls = []

    def spy(loss):
        def recorded(net, x, cond, sigma, noise):
            calls.append((net.training, cond.clone()))
            return loss(net, x, cond, sigma, noise)

        return recorded

    # An L_null the clamped L_GA cannot reach: three full steps.
    f1, f2, info, data = unlearn_micro(tmp_path, "method.max_steps=3", loss_null=100.0, spy=spy)
    assert info["steps"] == 3 and len(calls) == 6  # a fine-tuning and a generated-item loss
    assert not any(training for training, _ in calls)  # no dropout
    # pretrain.cond_drop=0.9 would null most conditions; unlearning keeps each item's own.
    assert all(cond.abs().sum(1).gt(0).all() for _, cond in calls)
    before, after = dict(f1.named_parameters()), dict(f2.named_parameters())
    for name, p in after.items():
        if name.endswith(".bias"):
            assert torch.equal(p, before[name]), name
    changed = [n for n, p in after.items() if not torch.equal(p, before[n])]
    assert changed and all(".mlp." in n or n.startswith("cond_mlp.") for n in changed)
    assert all(n.endswith(".weight") for n in changed)


@pytest.mark.parametrize("before_step", [False, True])
def test_the_stop_rule_ends_unlearning_in_the_papers_order(tmp_path, before_step):
    # L_GA is clamped at L_null, so a tiny L_null meets the rule on the first batch.
    f1, f2, info, _ = unlearn_micro(
        tmp_path, f"method.stop_before_step={before_step}", loss_null=1e-4
    )
    assert len(info["trajectory"]) == 1 and not info["hit_max_steps"]
    same = all(torch.equal(a, b) for a, b in zip(f1.parameters(), f2.parameters(), strict=True))
    if before_step:  # the release: the rule is checked before stepping, F2 = F1
        assert info["steps"] == 0 and same
    else:  # App. A.1 (lines 37-40): that batch's step is taken, then unlearning stops
        assert info["steps"] == 1 and not same


def test_u_c2_draws_unlearning_sigmas_from_the_top_of_the_generation_schedule():
    edm = EDM()
    draws = ScheduleDraws(edm, 0.7).training_sigma(100, torch.Generator().manual_seed(0))
    levels = edm.schedule(ScheduleDraws.LEVELS).float()
    assert all(torch.isclose(levels, s).any() for s in draws)  # on the schedule
    # The 100 largest of 142 uniform positions: nothing from the last quarter of the schedule.
    assert draws.min() >= levels[int(0.75 * (ScheduleDraws.LEVELS - 1))]
    assert draws.max() > 40  # and the high-noise end is reached


def test_s_c2_compares_mean_losses_of_independent_pairs(trained, tmp_path):
    from conftest import context

    from mucs_pipeline.attribution.mucs import MUCS, normalized_skew

    method = OmegaConf.to_container(trained[0].method)
    cfg = OmegaConf.create({**method, "noise_consistent": False, "num_noises": 4})
    mucs = MUCS(cfg, context(trained, 1.6, tmp_path))
    items = torch.arange(5)
    loss_f2 = mucs.loss_f1[items][None] * 1.5 + torch.rand(1, 5, 4)
    expected = normalized_skew(
        mucs.loss_f1[items].mean(-1, keepdim=True), loss_f2.mean(-1, keepdim=True), cfg.eps
    )
    assert torch.allclose(mucs._skew(items, loss_f2), expected)


# --- Augmentation ----------------------------------------------------------------------


def test_augmentation_is_seeded_and_labels_the_geometric_draws():
    recipe = OmegaConf.create(RECIPE)
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    out1, labels1 = augment.augment(x, recipe, torch.Generator().manual_seed(3))
    out2, labels2 = augment.augment(x, recipe, torch.Generator().manual_seed(3))
    assert torch.equal(out1, out2) and torch.equal(labels1, labels2)
    flip, theta, labels = augment.draw(20_000, recipe, torch.Generator().manual_seed(4))
    moved = (theta != torch.eye(2, 3)).flatten(1).any(1)
    assert torch.equal(labels, moved.long())  # flips are not labelled, every other op is
    # Each of the 4 ops with p = 0.12: P(label) = 1 - 0.88^4; half the draws flipped.
    assert labels.float().mean().item() == pytest.approx(1 - 0.88**4, abs=0.015)
    assert flip.float().mean().item() == pytest.approx(0.5, abs=0.015)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    off = OmegaConf.create({**RECIPE, "p": 0.0})
    assert augment.augment(x, off, gen) == (x, None) and torch.equal(gen.get_state(), state)


def test_augmentation_transforms_are_exact_on_the_pixel_grid():
    x = torch.rand(1, 1, 8, 8)
    no_flip = torch.zeros(1, dtype=torch.bool)
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # a rotation by 90 degrees
    rotated = augment.transform(x, no_flip, quarter)
    assert torch.allclose(rotated, torch.rot90(x, 1, (2, 3)), atol=1e-6) or torch.allclose(
        rotated, torch.rot90(x, -1, (2, 3)), atol=1e-6
    )
    shift = torch.tensor([[[1.0, 0.0, 2 / 8], [0.0, 1.0, 0.0]]])  # one pixel, in x
    shifted = augment.transform(x, no_flip, shift)
    assert torch.allclose(shifted[..., :-1], x[..., 1:], atol=1e-6)
    assert torch.equal(augment.transform(x, torch.ones(1, dtype=torch.bool), torch.eye(2, 3)[None]),
                       x.flip(-1))  # fmt: skip


def test_augmentation_labels_condition_the_network(tmp_path):
    cfg = make_cfg(tmp_path, "pretrain.augment.p=0.12")
    data = build_dataset(cfg.dataset)
    net = perturb(init_model(cfg, data, cfg.seed)).eval()
    assert net.aug_embed is not None
    assert make_cfg(tmp_path).pretrain.augment.p == 0  # digits: off, and no label embedding
    assert init_model(make_cfg(tmp_path), data, 0).aug_embed is None
    x, c, cond = data.x[:4], torch.randn(4), data.cond[:4]
    plain, label0 = net(x, c, cond), net(x, c, cond, torch.zeros(4, dtype=torch.long))
    assert torch.equal(plain, label0)  # sampling and scoring see label 0: not augmented
    assert not torch.allclose(plain, net(x, c, cond, torch.ones(4, dtype=torch.long)))


# --- Configs: the paper experiments compose to the paper's protocol --------------------


@pytest.mark.parametrize("experiment", [*PAPER, "cifar10_dtrak", "coco_abu"])
def test_paper_experiments_compose_to_the_papers_protocol(experiment):
    cfg = compose_experiment(f"+experiment={experiment}")
    assert OmegaConf.to_container(cfg.pretrain.augment) == RECIPE  # the release, all datasets
    assert cfg.retrain.common_random_numbers is False  # App. A.2: from scratch, same seed
    assert cfg.pretrain.patience is None  # Table 4's update counts, no early stopping
    assert cfg.pretrain.batch_size == 128 and cfg.pretrain.warmup_steps == 10_000
    assert cfg.generate.num_items == 20 and cfg.generate.num_steps == 32
    assert cfg.evaluate.k_fraction == 0.02 and cfg.metric.ssim_sigma == 1.5
    assert cfg.null_loss.num_batches * cfg.null_loss.batch_size == 2000
    if experiment.endswith("_mucs"):
        assert cfg.method.lam == 0.2 and cfg.method.stop_before_step is False
        assert all(p.endswith(".weight") for p in cfg.method.params)  # biases frozen
    if experiment.startswith("coco"):
        assert cfg.dataset.clip_pretrained == "laion2b_s32b_b82k" and cfg.dataset.sample_captions
    digits = compose_experiment("+experiment=digits_mucs")
    assert digits.retrain.common_random_numbers is True and digits.pretrain.augment.p == 0


def test_digits_mucs_runs_the_tuned_lambda_and_the_default_the_papers():
    tuned, default = compose_experiment("+experiment=digits_mucs"), compose_experiment()
    assert tuned.method.lam == 0.1 and default.method.lam == 0.2
    # Nothing else differs, so the two form one comparison in the report.
    tuned.method.lam = 0.2
    assert tuned == default
    assert compose_experiment("+experiment=digits_dtrak").method.name == "dtrak"


# --- Retraining: early stopping on the held-out split ----------------------------------


def test_early_stopping_stops_without_improvement_and_keeps_the_best_ema(tmp_path):
    from mucs_pipeline.artifacts import load
    from mucs_pipeline.training import train

    # lr 0: the validation loss never improves on the first one.
    cfg = make_cfg(tmp_path, "pretrain.patience=1", "pretrain.validate_every=2",
                   "pretrain.lr=0.0", "pretrain.steps=12")  # fmt: skip
    data = build_dataset(cfg.dataset)
    assert len(build_dataset(cfg.dataset, split="test")) == 1797 - 120  # digits held out
    net = train(cfg, data, EDM(), tmp_path / "run", cfg.pretrain.steps)
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    assert [int(r["step"]) for r in rows] == [1, 3]  # validations after steps 2 and 4, then stop
    assert rows[0]["val/loss"] == rows[1]["val/loss"]
    best = load(tmp_path / "run" / "ema_best.pt")
    assert all(torch.equal(best[k], v) for k, v in net.state_dict().items())


# --- Evaluation: SSIM as the release computes it ---------------------------------------


@pytest.mark.parametrize("resolution", [32, 64])
def test_ssim_equals_torchmetrics_as_the_release_calls_it(resolution):
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    from mucs_pipeline.evaluation.metrics import ssim

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, resolution, resolution, generator=gen) * 2 - 1
    b = (a + 0.4 * torch.randn(a.shape, generator=gen)).clamp(-1, 1)
    release = StructuralSimilarityIndexMeasure(
        data_range=1.0, kernel_size=7, sigma=1.5, gaussian_kernel=True, reduction="none"
    )
    expected = release((a + 1) / 2, (b + 1) / 2)
    metric = compose_experiment("+experiment=cifar10_mucs").metric
    assert torch.allclose(ssim(a, b, metric), expected, atol=1e-6)


# --- COCO: captions and text encoder ---------------------------------------------------


def test_coco_training_draws_one_caption_per_access(tmp_path):
    write_coco(tmp_path / "coco", "train2017", 3, captions_per_image=3)
    write_coco(tmp_path / "coco", "val2017", 2)
    cfg = compose_experiment(
        "+experiment=coco_mucs", f"dataset.root={tmp_path / 'coco'}", "dataset.resolution=16",
        "dataset.clip_pretrained=null", f"dataset.cache_dir={tmp_path / 'cache'}",
    ).dataset  # fmt: skip
    data = build_dataset(cfg)
    assert data.cond_offsets.tolist() == [0, 3, 6, 9]
    assert torch.equal(data.cond, data.cond_options[[0, 3, 6]])  # caption 0 elsewhere
    idx = torch.tensor([1])
    drawn = {
        int((data.training_cond(idx, rng.generator("t", s)) == data.cond_options).all(1).nonzero())
        for s in range(30)
    }
    assert drawn == {3, 4, 5}  # every caption of image 1, none of another image
    kept = data.subset(torch.tensor([False, True, True]))
    assert torch.equal(kept.cond_options, data.cond_options[3:]) and len(kept) == 2
    off = build_dataset(OmegaConf.merge(cfg, {"sample_captions": False}))
    assert off.cond_options is None and torch.equal(off.training_cond(idx, rng.generator(0)),
                                                    data.cond[idx])  # fmt: skip


# --- Paper-scale smoke tests: the real DiT/B of each paper experiment on small files ---


def paper_files(experiment: str, root) -> list[str]:
    """A handful of items in each release format at the paper's resolution."""
    if experiment.startswith("cifar10"):
        write_cifar_batches(root / "cifar-10-batches-py", per_batch=2)
        return [f"dataset.root={root}"]
    if experiment.startswith("artbench10"):
        write_cifar_batches(
            root / "artbench-10-batches-py", side=64, per_batch=2, meta=("meta", "styles")
        )
        return [f"dataset.root={root}", "dataset.format=python"]
    write_coco(root, "train2017", 10)
    write_coco(root, "val2017", 4)
    return [f"dataset.root={root}", "dataset.clip_pretrained=null",
            f"dataset.cache_dir={root}/cache"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiment_runs_every_stage_at_real_size(experiment, tmp_path):
    from mucs_pipeline import pipeline
    from mucs_pipeline.artifacts import load
    from mucs_pipeline.layout import Layout

    overrides = [
        f"+experiment={experiment}", f"paths.runs_dir={tmp_path / 'runs'}", "logger=csv",
        "trainer.progress_bar=false", "pretrain.steps=2", "pretrain.batch_size=4",
        "pretrain.checkpoint_every=100", "generate.num_items=1", "generate.num_controls=1",
        "generate.num_steps=2", "null_loss.batch_size=2", "null_loss.num_batches=1",
        "method.max_steps=1", "method.num_noises=2", "method.batch_size=2", "method.ga_draws=2",
        *paper_files(experiment, tmp_path / "data"),
    ]  # fmt: skip
    cfg = compose_experiment(*overrides)
    pipeline.run(cfg)
    layout = Layout(cfg)
    f1 = load(layout.dir("pretrain") / "ema.pt")
    millions = sum(v.numel() for k, v in f1.items() if not k.startswith("aug_")) / 1e6
    expected = {"cifar10_mucs": 99.8, "artbench10_mucs": 100.0, "coco_mucs": 146.6}
    assert millions == pytest.approx(expected[experiment], abs=0.1)
    assert "aug_embed.weight" in f1  # trained with EDM's augmentation labels
    scores = load(layout.dir("attribute", "mucs") / "scores.pt")
    assert scores["scores"].dtype == torch.float32 and torch.isfinite(scores["scores"]).all()
    assert scores["scores"].shape == (1, 10) and scores["steps"].tolist() == [1]
    removed = load(layout.dir("retrain", "mucs") / "removed.pt")
    assert len(removed) == 1  # k = max(1, 2% of 10)
    with open(layout.dir("evaluate") / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["metric"] for r in rows} == {"ssim", "neg_mse"}
    assert all(0 <= float(r["auc"]) <= 1 and not math.isnan(float(r["p_value"])) for r in rows)
