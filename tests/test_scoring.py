import pytest
import torch
from conftest import make_cfg, perturb
from omegaconf import OmegaConf

from mucs_pipeline.attribution.mucs import normalized_skew
from mucs_pipeline.attribution.scoring import LossGrid, NoiseBank, loss_matrix, noise_bank
from mucs_pipeline.data import build_dataset
from mucs_pipeline.models import EDM
from mucs_pipeline.training import init_model


def test_skew_matches_hand_computation_and_is_bounded():
    loss_1 = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    loss_2 = torch.tensor([[3.0, 2.0], [0.0, 1.5]])
    eps = 1e-3
    expected = torch.tensor(
        [
            ((3 - 1) / (3 + 1 + eps) + 0.0) / 2,
            ((0 - 0.5) / (0 + 0.5 + eps) + (1.5 - 0.5) / (1.5 + 0.5 + eps)) / 2,
        ]
    )
    torch.testing.assert_close(normalized_skew(loss_1, loss_2, eps), expected)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 30, generator=gen) * 5, torch.randn(500, 30, generator=gen) * 5
    skew = normalized_skew(a, b, eps)
    assert skew.min() >= -1 and skew.max() <= 1


def test_noise_bank_uses_first_70_percent_of_generation_schedule():
    edm = EDM()
    bank = noise_bank(edm, (1, 8, 8), 100, 0.7, seed=0)
    full = edm.schedule(142)
    torch.testing.assert_close(bank.sigma, full[:100].float())
    assert bank.noise.shape == (100, 1, 8, 8)
    assert torch.equal(bank.noise, noise_bank(edm, (1, 8, 8), 100, 0.7, seed=0).noise)


@pytest.mark.parametrize("batch_pairs", [1, 15, 1000])
@pytest.mark.parametrize("k", [1, 3])
def test_loss_matrix_equals_one_pair_at_a_time(tmp_path, batch_pairs, k):
    """The engine (flattened grid, k networks per vmapped pass) against the plain loop."""
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    data.x, data.cond = data.x[:7], data.cond[:7]
    nets = [perturb(init_model(cfg, data, seed=0), seed=s).eval() for s in range(k)]
    edm = EDM()
    bank = noise_bank(edm, (1, 8, 8), 5, 0.7, seed=1)
    batched = loss_matrix(nets if k > 1 else nets[0], edm, data, bank, batch_pairs=batch_pairs)
    assert batched.shape == ((k, 7, 5) if k > 1 else (7, 5))
    with torch.no_grad():
        naive = torch.tensor(
            [
                [
                    [
                        edm.loss(
                            net,
                            data.x[i : i + 1],
                            data.cond[i : i + 1],
                            bank.sigma[j : j + 1],
                            bank.noise[j : j + 1],
                        ).item()
                        for j in range(5)
                    ]
                    for i in range(7)
                ]
                for net in nets
            ]
        )
    torch.testing.assert_close(batched, naive if k > 1 else naive[0], atol=1e-5, rtol=1e-5)
    assert isinstance(bank, NoiseBank)


def perturbed_setup(tmp_path):
    """The micro config and data, a perturbed random network, EDM and a 10-pair bank."""
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    net = perturb(init_model(cfg, data, seed=0)).eval()
    edm = EDM()
    return cfg, data, net, edm, noise_bank(edm, (1, 8, 8), 10, 0.7, seed=1)


@pytest.mark.parametrize("k", [1, 3])
def test_reduced_scoring_equals_the_full_grid_and_holds_one_batch(tmp_path, monkeypatch, k):
    """Scores reduced inside the predict step (how generated items are scored) equal the
    score rule on the whole loss grid; the predictions hold per-item values only."""
    cfg, data, net, edm, bank = perturbed_setup(tmp_path)
    nets = [perturb(init_model(cfg, data, seed=0), seed=s).eval() for s in range(k)]
    loss_f1 = loss_matrix(net, edm, data, bank, 400)
    full = loss_matrix(nets, edm, data, bank, 400)  # (k, |Z|, |N|)
    outputs = []
    predict = LossGrid.predict_step
    monkeypatch.setattr(
        LossGrid, "predict_step", lambda self, *a: outputs.append(predict(self, *a)) or outputs[-1]
    )
    reduced = loss_matrix(
        nets, edm, data, bank, 400,
        reduce=lambda items, losses: normalized_skew(loss_f1[items], losses, 1e-3),
    )  # fmt: skip
    assert reduced.shape == (k, len(data))
    torch.testing.assert_close(reduced, normalized_skew(loss_f1, full, 1e-3))
    per = 400 // (10 * k)  # training items per batch
    assert len(outputs) == -(-len(data) // per)
    assert all(values.shape == (k, len(idx)) for idx, values, *_ in outputs)


@pytest.mark.slow
def test_compiled_scoring_agrees_with_eager(tmp_path):
    """trainer.compile_scoring: torch.compile of the loss, within 1e-5 of eager."""
    cfg, data, net, edm, bank = perturbed_setup(tmp_path)
    eager = loss_matrix(net, edm, data, bank, 400)
    tc = OmegaConf.create({"accelerator": "cpu", "compile_scoring": True})
    torch._dynamo.reset()
    compiled = loss_matrix(net, edm, data, bank, 400, tc)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    other = perturb(init_model(cfg, data, seed=0), seed=5).eval()  # the next generated item
    assert not torch.equal(loss_matrix(other, edm, data, bank, 400, tc), compiled)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no recompiling


@pytest.mark.parametrize("k_fraction,expected", [(0.02, 12), (0.001, 1)])
def test_top_k(k_fraction, expected):
    from mucs_pipeline.evaluation.protocol import top_k

    assert top_k(600, k_fraction) == expected


def test_removal_set_is_union_of_top_k():
    from mucs_pipeline.evaluation.protocol import removal_set

    scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.0, 0.2, 0.95, 0.3]])
    assert removal_set(scores, 2).tolist() == [0, 2, 3]


def test_bf16_scoring_agrees_with_float32(tmp_path):
    """The tolerance the README states for bf16 scoring: losses within 5% (relative, median 1%)."""
    cfg, data, net, edm, bank = perturbed_setup(tmp_path)
    fp32 = loss_matrix(net, edm, data, bank, 400)
    bf16 = loss_matrix(net, edm, data, bank, 400, bf16=True)
    rel = ((bf16 - fp32).abs() / fp32.abs().clamp(min=1e-3)).flatten()
    assert rel.max() < 0.05 and rel.median() < 0.01
    assert not torch.equal(fp32, bf16)  # autocast really ran


def test_noise_bank_size_is_robust_to_float_error_and_checks_the_fraction():
    edm = EDM()
    assert len(noise_bank(edm, (1, 2, 2), 3, 0.1, seed=0).sigma) == 3
    torch.testing.assert_close(
        noise_bank(edm, (1, 2, 2), 3, 0.1, seed=0).sigma, edm.schedule(30)[:3].float()
    )
    with pytest.raises(ValueError, match="schedule_fraction"):
        noise_bank(edm, (1, 2, 2), 3, 1.5, seed=0)


def test_bf16_scoring_enters_the_keys_of_only_the_methods_it_changes(tmp_path):
    """MUCS and Forward-INF score network losses under autocast: bf16 is a new unit; random
    and pixel scores do not change, so a bf16 run reuses their float32 units (and retrains)."""
    from conftest import make_cfg

    from mucs_pipeline.layout import Layout

    for method, changes in (("mucs", True), ("forward_inf", True), ("pixel", False)):
        keys = [
            Layout(make_cfg(tmp_path, f"method={method}", f"trainer.bf16_scoring={b}"))
            for b in ("false", "true")
        ]
        assert (keys[0].key("attribute", method) != keys[1].key("attribute", method)) == changes
        assert keys[0].key("retrain", "random") == keys[1].key("retrain", "random")
