import math

import pytest
import torch
from conftest import make_cfg, perturb

from mucs_pipeline.data import build_dataset
from mucs_pipeline.generation import generate, latents_for
from mucs_pipeline.models import EDM
from mucs_pipeline.training import init_model


def test_preconditioning_matches_edm_table_1():
    edm = EDM(sigma_data=0.5)
    sigma = torch.tensor([0.5, 1.0, 80.0])
    c_skip, c_out, c_in, c_noise = edm.precond(sigma)
    # sigma = sigma_data: c_skip = 1/2, c_out = sigma_data/sqrt(2), c_in = 1/(sigma_data sqrt(2)).
    assert c_skip[0].item() == pytest.approx(0.5)
    assert c_out[0].item() == pytest.approx(0.5 / math.sqrt(2))
    assert c_in[0].item() == pytest.approx(1 / (0.5 * math.sqrt(2)))
    assert c_skip[1].item() == pytest.approx(0.25 / 1.25)
    assert c_out[1].item() == pytest.approx(0.5 / math.sqrt(1.25))
    assert c_noise[1].item() == pytest.approx(0.0)
    assert c_noise[2].item() == pytest.approx(math.log(80) / 4)
    assert edm.loss_weight(torch.tensor(1.0)).item() == pytest.approx(1.25 / 0.25)


def test_loss_of_zero_network_is_one_on_calibrated_data():
    """A network that outputs 0 gives D = c_skip * x: the loss is 1 when E[x^2] = sigma_data^2."""
    edm = EDM()
    zero = lambda x, c_noise, cond: torch.zeros_like(x)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, 4, 4, generator=gen) * 0.5
    sigma = edm.training_sigma(4000, gen)
    noise = torch.randn(x.shape, generator=gen)
    losses = edm.loss(zero, x, None, sigma, noise)
    assert losses.shape == (4000,)
    assert losses.mean().item() == pytest.approx(1.0, abs=0.05)


def test_schedule_is_edm_eq_5():
    edm = EDM()
    t = edm.schedule(32)
    assert t.shape == (33,) and t.dtype == torch.float64
    assert t[0].item() == pytest.approx(80.0) and t[31].item() == pytest.approx(0.002)
    assert t[32].item() == 0.0 and bool((t[:-1].diff() < 0).all())


def test_sampler_is_deterministic_per_seed_and_independent_of_batching(tmp_path):
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    net = perturb(init_model(cfg, data, seed=0)).eval()
    edm = EDM()
    seeds = torch.tensor([3, 7, 11])
    cond = torch.eye(10)[[1, 2, 3]]
    gen_cfg = cfg.generate.copy()
    together = generate(net, edm, seeds, cond, (1, 8, 8), gen_cfg, torch.device("cpu"))
    again = generate(net, edm, seeds, cond, (1, 8, 8), gen_cfg, torch.device("cpu"))
    assert torch.equal(together, again)
    alone = generate(net, edm, seeds[1:2], cond[1:2], (1, 8, 8), gen_cfg, torch.device("cpu"))
    torch.testing.assert_close(alone[0], together[1], atol=1e-5, rtol=0)
    assert not torch.allclose(together[0], together[1])
    assert torch.equal(latents_for(seeds[1:2], (1, 8, 8))[0], latents_for(seeds, (1, 8, 8))[1])
