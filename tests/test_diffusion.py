import math

import pytest
import torch
from conftest import make_cfg, perturb

from mucs_pipeline.data import build_dataset
from mucs_pipeline.generation import generate, latents_for
from mucs_pipeline.models import DDPM, EDM, Flow
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


def test_schedule_is_edm_eq_5():
    edm = EDM()
    t = edm.schedule(32)
    assert t.shape == (32,) and t.dtype == torch.float64
    assert t[0].item() == pytest.approx(80.0) and t[31].item() == pytest.approx(0.002)
    assert bool((t.diff() < 0).all())


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


class Oracle(torch.nn.Module):
    """The optimal network of a one-point dataset {x0}, in each variant's parameterisation."""

    def __init__(self, variant, x0: torch.Tensor):
        super().__init__()
        self.variant, self.x0 = variant, x0

    def forward(self, x_in, c_noise, cond):
        v, x0 = self.variant, self.x0
        if isinstance(v, EDM):  # F = (x0 - c_skip x) / c_out, with x = x_in / c_in
            sigma = (4 * c_noise.double()).exp()
            c_skip, c_out, c_in, _ = (c.reshape(-1, 1, 1, 1) for c in v.precond(sigma))
            return ((x0 - c_skip * x_in / c_in) / c_out).float()
        if isinstance(v, DDPM):  # epsilon = (x_t - sqrt(a) x0) / sqrt(1 - a)
            a = v.alpha((c_noise.double() * v.T).round()).reshape(-1, 1, 1, 1)
            return ((x_in - a.sqrt() * x0) / (1 - a).sqrt()).float()
        t = c_noise.double().reshape(-1, 1, 1, 1)  # flow: v = (x_t - x0) / t
        return ((x_in - x0) / t.clamp(min=1e-12)).float()


VARIANTS = [EDM(), DDPM(), Flow(solver="heun"), Flow(solver="euler")]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v.name}")
def test_optimal_network_has_zero_loss_and_the_sampler_reaches_the_point(variant):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 1, 4, 4, generator=gen) * 2 - 1
    oracle = Oracle(variant, x0.double())
    sigma = variant.training_sigma(64, gen)
    noise = torch.randn(64, 1, 4, 4, generator=gen)
    losses = variant.loss(oracle, x0.expand(64, -1, -1, -1), None, sigma, noise)
    assert losses.shape == (64,) and losses.max().item() < 1e-6
    latents = torch.randn(3, 1, 4, 4, generator=gen)
    out = variant.sample(oracle, latents, None, num_steps=16)
    torch.testing.assert_close(out, x0.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "variant,expected", [(EDM(), 1.0), (DDPM(), 1.0), (Flow(), 1.25)], ids=["edm", "ddpm", "flow"]
)
def test_null_loss_of_a_zero_network(variant, expected):
    """L_null of a network that outputs 0, on data with E[x^2] = 0.25."""
    zero = lambda x, c_noise, cond: torch.zeros_like(x)  # noqa: E731
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8000, 1, 4, 4, generator=gen) * 0.5
    losses = variant.loss(
        zero, x, None, variant.training_sigma(8000, gen), torch.randn(x.shape, generator=gen)
    )
    assert losses.mean().item() == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("variant", VARIANTS[:3], ids=lambda v: v.name)
def test_schedules_descend(variant):
    levels = variant.schedule(142)
    assert levels.shape == (142,) and bool((levels.diff() <= 0).all()) and levels[0] > levels[-1]


def test_ddim_clipping_steps_toward_the_clipped_prediction():
    """Clipping x0 at each DDIM step must also re-derive the noise from the clipped x0.

    A network aiming at a point partly outside [-1, 1] then follows exactly the trajectory of
    one aiming at the clipped point. Stepping with the clipped x0 but the network's own noise
    (the earlier sampler) lands between the two and left speckle on flat regions of digits.
    """
    ddpm = DDPM(clip_denoised=True)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 4, 4, generator=gen) * 2 - 1
    target[..., :2, :] = -1.0  # a flat "background" at the clipping boundary
    overshoot = target.clone()
    overshoot[..., :2, :] = -1.6  # the network overshoots the background
    latents = torch.randn(2, 1, 4, 4, generator=gen)

    def states(x0):
        seen = []
        oracle = Oracle(ddpm, x0.double())

        def net(x_in, c_noise, cond):
            seen.append(x_in.clone())
            return oracle(x_in, c_noise, cond)

        out = ddpm.sample(net, latents, None, num_steps=8)
        return torch.stack(seen), out

    seen_over, out_over = states(overshoot)
    seen_clip, _ = states(target)
    torch.testing.assert_close(seen_over, seen_clip, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_over, target.expand(2, -1, -1, -1), atol=1e-4, rtol=0)
