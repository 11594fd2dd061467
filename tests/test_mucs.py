"""MUCS unlearning and attribution on a briefly trained micro model."""

import pytest
import torch
from conftest import context

from mucs_pipeline.attribution import build_method
from mucs_pipeline.attribution.base import select_parameters
from mucs_pipeline.attribution.unlearn import unlearn
from mucs_pipeline.stages.null_loss import estimate_loss_null


def test_loss_null_reflects_data_energy(trained):
    cfg, data, edm, _, _ = trained
    loss_null = estimate_loss_null(cfg, data, edm)
    # A fresh denoiser outputs about c_skip * x, so L_null tracks E[x^2] (digits: well above 1).
    assert 1.2 < loss_null < 2.5


def test_unlearning_updates_only_mlp_weights(trained):
    cfg, data, edm, f1, _ = trained
    before = {k: v.clone() for k, v in f1.state_dict().items()}
    f2, info = unlearn(f1, data.x[0], data.cond[:1], data, edm, 1e6, cfg.method, cfg, stream=(0, 0))
    assert {k: v for k, v in f1.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in f1.state_dict().items()), "F1 must stay intact"
    mlp = set(select_parameters(f2, cfg.method.params))
    assert any(n.startswith("cond_mlp") for n in mlp) and any(".mlp." in n for n in mlp)
    params = dict(f2.named_parameters())
    changed = {n for n, p in params.items() if not torch.equal(p, before[n])}
    assert changed and changed <= mlp
    assert all(torch.equal(b, before[n]) for n, b in f2.named_buffers() if n in before)
    # L_null = 1e6 is never reached: the cap applies and is recorded.
    assert info["steps"] == cfg.method.max_steps and info["hit_max_steps"]


def test_unlearning_stops_by_the_rule(trained):
    cfg, data, edm, f1, _ = trained
    # With a tiny L_null the clamped L_GA equals it at once: one step, then stop.
    _, info = unlearn(f1, data.x[0], data.cond[:1], data, edm, 1e-4, cfg.method, cfg, stream=(0, 1))
    assert info["steps"] == 1 and not info["hit_max_steps"]
    assert info["trajectory"].shape == (1, 2)


def test_exact_copy_of_generated_item_ranks_in_top_1_percent(trained):
    cfg, data, edm, f1, tmp = trained
    loss_null = estimate_loss_null(cfg, data, edm)
    ctx = context(trained, loss_null, tmp / "cache")
    method = build_method(cfg.method, ctx)
    top = max(1, int(0.01 * len(data)))
    for j in (17, 101):
        scores, info = method.score(j, data.x[j], data.cond[j : j + 1])
        assert scores.shape == (len(data),)
        assert scores.min() >= -1 and scores.max() <= 1
        rank = int((scores > scores[j]).sum())
        assert rank < top, f"copy of item {j} ranked {rank}"


def test_cached_f1_losses_equal_recomputed(trained):
    cfg, data, edm, f1, tmp = trained
    from mucs_pipeline.attribution.scoring import loss_matrix

    ctx = context(trained, 1.7, tmp / "cache2")
    first = build_method(cfg.method, ctx)
    assert len(list((tmp / "cache2").glob("f1_losses-*.pt"))) == 1
    second = build_method(cfg.method, ctx)  # reads the cache
    fresh = loss_matrix(f1, edm, data, first.bank, 500)
    assert torch.equal(second.loss_f1, first.loss_f1)
    torch.testing.assert_close(second.loss_f1, fresh, atol=1e-5, rtol=1e-5)


def test_item_scores_are_the_skew_of_the_whole_loss_grids(trained):
    """MUCS reduces F2's losses batch by batch; the result is Eq. 3 on the full matrices."""
    from mucs_pipeline.attribution.mucs import normalized_skew
    from mucs_pipeline.attribution.scoring import loss_matrix

    cfg, data, edm, f1, tmp = trained
    method = build_method(cfg.method, context(trained, 1.7, tmp / "cache-grid"))
    scores, _ = method.score(9, data.x[9], data.cond[9:10])
    f2, _ = method.unlearn(9, data.x[9], data.cond[9:10])  # the same seeded stream
    loss_f1 = loss_matrix(f1, edm, data, method.bank, 500)
    loss_f2 = loss_matrix(f2, edm, data, method.bank, 500)
    expected = normalized_skew(loss_f1, loss_f2, cfg.method.eps)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)


def test_f1_losses_are_computed_once_per_run(trained, monkeypatch):
    from mucs_pipeline.attribution import scoring

    cfg, data, edm, f1, tmp = trained
    calls = []
    original = scoring.loss_matrix
    monkeypatch.setattr(
        scoring, "loss_matrix", lambda net, *a, **kw: calls.append(net) or original(net, *a, **kw)
    )
    ctx = context(trained, 1.7, tmp / "cache-count")
    build_method(cfg.method, ctx)
    build_method(cfg.method, ctx)  # a resumed run, or the next experiment of a sweep
    assert calls == [f1]  # F1 scored once, then read from the cache


@pytest.mark.slow  # make test-all: the GPU-oriented batching; make test stays < 10 min
def test_several_items_per_pass_give_the_same_scores(trained):
    from omegaconf import OmegaConf

    cfg, data, edm, f1, tmp = trained
    ctx = context(trained, 1.7, tmp / "cache-k")
    method_cfg = OmegaConf.merge(cfg.method, {"max_steps": 5, "items_per_pass": 3})
    method = build_method(method_cfg, ctx)
    assert method.items_per_pass == 3
    items = [5, 6, 7]
    args = items, [data.x[i] for i in items], [data.cond[i : i + 1] for i in items]
    together = method.score_many(*args)
    alone = [method.score(i, x, c) for i, x, c in zip(*args, strict=True)]
    for (a, info_a), (b, info_b) in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert info_a["steps"] == info_b["steps"]


def test_bf16_scores_rank_training_items_like_float32(trained):
    from omegaconf import OmegaConf
    from scipy.stats import spearmanr

    cfg, data, edm, f1, tmp = trained
    scores = []
    for bf16 in (False, True):
        run = OmegaConf.merge(cfg, {"trainer": {"bf16_scoring": bf16}})
        ctx = context(trained, 1.7, tmp / f"cache-bf16-{bf16}")
        ctx.cfg = run
        method = build_method(OmegaConf.merge(cfg.method, {"max_steps": 20}), ctx)
        scores.append(method.score(17, data.x[17], data.cond[17:18])[0])
    assert not torch.equal(*scores)  # autocast really ran
    assert spearmanr(scores[0].numpy(), scores[1].numpy()).statistic >= 0.99


def test_random_scores_are_reproducible(trained):
    cfg, data, edm, f1, tmp = trained
    from omegaconf import OmegaConf

    ctx = context(trained, 1.7, tmp / "cache3")
    rnd = build_method(OmegaConf.create({"name": "random"}), ctx)
    a, b = rnd.score(3, data.x[0], None)[0], rnd.score(3, data.x[0], None)[0]
    assert torch.equal(a, b) and not torch.equal(a, rnd.score(4, data.x[0], None)[0])


@pytest.mark.slow  # make test-all: the ablation switches; make test stays < 10 min
def test_table_2_scoring_switches(trained, tmp_path):
    """S-C1 subtraction, S-C2 non-consistent noise, S-C3 training sigmas change what they say."""
    from omegaconf import OmegaConf

    from mucs_pipeline.attribution.mucs import loss_subtraction
    from mucs_pipeline.attribution.scoring import training_bank

    cfg, data, edm, f1, _ = trained
    # A plain (non-struct) copy: the switches are keys that only ablation files add.
    base = OmegaConf.create(
        {**OmegaConf.to_container(cfg.method), "max_steps": 3, "stop_rule": False}
    )

    def build(**switches):
        return build_method(OmegaConf.merge(base, switches), context(trained, 1.7, tmp_path))

    proposed = build()
    skew = proposed.score(2, data.x[2], data.cond[2:3])[0]
    sub = build(score_rule="subtract")
    subtracted = sub.score(2, data.x[2], data.cond[2:3])[0]
    assert not torch.allclose(skew, subtracted)
    assert skew.abs().max() <= 1 and torch.isfinite(subtracted).all()
    l1, l2 = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 6.0]])
    assert loss_subtraction(l1, l2, 1e-3).item() == pytest.approx(2.0)

    inconsistent = build(noise_consistent=False)
    assert inconsistent.loss_f1.shape == proposed.loss_f1.shape
    assert not torch.allclose(inconsistent.loss_f1, proposed.loss_f1)
    again = inconsistent._losses(f1, "again", fresh=("f1", cfg.seed))
    assert torch.equal(again, inconsistent.loss_f1)  # still seeded and reproducible

    trained_sigma = build(score_sigma="training")
    expected = training_bank(edm, tuple(data.x.shape[1:]), base.num_noises, cfg.seed, "mucs")
    assert torch.equal(trained_sigma.bank.sigma, expected.sigma)
    assert not torch.equal(trained_sigma.bank.sigma, proposed.bank.sigma)
    with pytest.raises(ValueError, match="score_rule"):
        build(score_rule="dot")


def test_table_2_unlearning_sigma_switch(trained):
    from omegaconf import OmegaConf

    cfg, data, edm, f1, _ = trained
    base = OmegaConf.create(
        {**OmegaConf.to_container(cfg.method), "max_steps": 3, "stop_rule": False}
    )
    runs = {}
    for sigma in ("training", "schedule"):
        m_cfg = OmegaConf.merge(base, {"unlearn_sigma": sigma, "unlearn_schedule_fraction": 0.7})
        _, info = unlearn(f1, data.x[0], data.cond[:1], data, edm, 1.7, m_cfg, cfg, stream=(0, 0))
        runs[sigma] = info["trajectory"]
    # U-C2 draws the sigmas of both the fine-tuning and the ascent terms from the schedule.
    assert runs["training"].shape == runs["schedule"].shape
    assert (runs["training"][0] != runs["schedule"][0]).all()
