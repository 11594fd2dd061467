"""DDPM (Ho et al. 2020): epsilon prediction on diffusers' beta schedules; DDIM sampling."""

from __future__ import annotations

import torch

from mucs_pipeline.models.diffusion import Diffusion


class DDPM(Diffusion):
    """sigma is the integer timestep t in [0, T) carried as a float; alpha(sigma) = alpha_bar_t."""

    name = "ddpm"

    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        clip_denoised: bool = True,
    ):
        # diffusers' DDPMScheduler computes the schedule (in float32, as the checkpoints of
        # the ecosystem were trained), so that alphas_cumprod is its, bit for bit.
        from diffusers import DDPMScheduler

        self.T, self.clip_denoised = num_timesteps, clip_denoised
        try:
            scheduler = DDPMScheduler(num_timesteps, beta_start, beta_end, beta_schedule)
        except NotImplementedError:
            raise ValueError(
                f"diffusion.beta_schedule={beta_schedule!r}: expected one of diffusers' "
                "linear, scaled_linear, squaredcos_cap_v2, sigmoid"
            ) from None
        self.alpha_bar = scheduler.alphas_cumprod.double()  # (T,)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha_bar.to(t.device)[t.long()]

    def predict(self, net, x, cond, sigma):
        """The predicted noise epsilon(x_t, t)."""
        return net(x.float(), sigma.float().reshape(-1) / self.T, cond).float()

    def output(self, net, x, cond, sigma, noise):
        a = self.alpha(sigma).float().reshape(-1, 1, 1, 1)
        return self.predict(net, a.sqrt() * x + (1 - a).sqrt() * noise, cond, sigma)

    def loss(self, net, x, cond, sigma, noise):
        """||n - F(sqrt(alpha) x + sqrt(1 - alpha) n, t)||^2, mean over pixels (paper Sec. 2.1)."""
        return (noise - self.output(net, x, cond, sigma, noise)).square().flatten(1).mean(dim=1)

    def training_sigma(self, n, generator):
        """t uniform over the T timesteps."""
        return torch.randint(0, self.T, (n,), generator=generator).double()

    def training_quantile(self, u):
        """Timestep floor(u T): with u = (i + 1/2) / T every timestep once (D-TRAK)."""
        return (u.double() * self.T).floor().clamp(0, self.T - 1)

    def schedule(self, num_steps):
        """num_steps timesteps evenly spaced from T-1 down to 0."""
        return torch.linspace(self.T - 1, 0, num_steps, dtype=torch.float64).round()

    @torch.no_grad()
    def sample(self, net, latents, cond, num_steps, cfg_weight=1.0):
        """Deterministic DDIM (eta = 0), so that an item depends on its seed's latents alone."""
        steps = self.schedule(num_steps).to(latents.device)
        x = latents.double()
        for i, t in enumerate(steps):
            a_t = self.alpha(t)
            a_prev = self.alpha(steps[i + 1]) if i + 1 < len(steps) else torch.ones_like(a_t)
            eps = self.guided(net, x, cond, t, cfg_weight)
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            if self.clip_denoised:
                # Re-derive the noise from the clipped x0 (as diffusers' DDIM does): stepping
                # with the clipped x0 but the unclipped noise leaves speckle on flat regions.
                x0 = x0.clamp(-1, 1)
                eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x.float()
