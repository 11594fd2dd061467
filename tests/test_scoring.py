import pytest
import torch
from conftest import make_cfg, perturb

from mucs_pipeline.attribution.scoring import NoiseBank, loss_matrix, noise_bank, normalized_skew
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


def test_loss_matrix_equals_one_pair_at_a_time(tmp_path):
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    data.x, data.cond = data.x[:7], data.cond[:7]
    net = perturb(init_model(cfg, data, seed=0)).eval()
    edm = EDM()
    bank = noise_bank(edm, (1, 8, 8), 5, 0.7, seed=1)
    batched = loss_matrix(net, edm, data, bank, batch_pairs=15)
    assert batched.shape == (7, 5)
    with torch.no_grad():
        naive = torch.tensor(
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
        )
    torch.testing.assert_close(batched, naive, atol=1e-5, rtol=1e-5)
    assert isinstance(bank, NoiseBank)


@pytest.mark.parametrize("k_fraction,expected", [(0.02, 12), (0.001, 1)])
def test_top_k(k_fraction, expected):
    from mucs_pipeline.stages.retrain import top_k

    assert top_k(600, k_fraction) == expected


def test_removal_set_is_union_of_top_k():
    from mucs_pipeline.stages.retrain import removal_set

    scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.0, 0.2, 0.95, 0.3]])
    assert removal_set(scores, 2).tolist() == [0, 2, 3]


def test_bf16_scoring_agrees_with_float32(tmp_path):
    """The tolerance the README states for bf16 scoring: losses within 5% (relative, median 1%)."""
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    net = perturb(init_model(cfg, data, seed=0)).eval()
    edm = EDM()
    bank = noise_bank(edm, (1, 8, 8), 10, 0.7, seed=1)
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
