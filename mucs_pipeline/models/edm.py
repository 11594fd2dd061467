"""EDM (Karras et al. 2022): preconditioning, the per-sample loss, and the Heun sampler."""

from __future__ import annotations

import torch
from torch import nn

from mucs_pipeline.models.diffusion import Diffusion


class EDM(Diffusion):
    """The EDM variant: sigma is the noise standard deviation."""

    name = "edm"

    def __init__(
        self,
        sigma_data: float = 0.5,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
    ):
        self.sigma_data, self.P_mean, self.P_std = sigma_data, P_mean, P_std
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def precond(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """c_skip, c_out, c_in, c_noise of EDM Table 1, for a (N,) sigma."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def predict(self, net, x, cond, sigma):
        """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise), in float32."""
        x = x.float()
        sigma = sigma.float().reshape(-1)
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in self.precond(sigma))
        F_x = net(c_in * x, c_noise.reshape(-1), cond)
        return c_skip * x + c_out * F_x.float()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def loss(self, net, x, cond, sigma, noise):
        """Weighted squared error of the denoiser, mean over pixels -> (N,)."""
        D_x = self.predict(net, x + sigma.reshape(-1, 1, 1, 1) * noise, cond, sigma)
        err = (D_x - x).square().flatten(1).mean(dim=1)  # (N,)
        return self.loss_weight(sigma) * err

    def output(self, net, x, cond, sigma, noise):
        sigma = sigma.float().reshape(-1)
        _, _, c_in, c_noise = self.precond(sigma)
        x_t = x.float() + sigma.reshape(-1, 1, 1, 1) * noise
        return net(c_in.reshape(-1, 1, 1, 1) * x_t, c_noise, cond).float()

    def training_sigma(self, n, generator):
        """ln(sigma) ~ N(P_mean, P_std^2)."""
        return (torch.randn(n, generator=generator) * self.P_std + self.P_mean).exp()

    def training_quantile(self, u):
        return (torch.special.ndtri(u.double()) * self.P_std + self.P_mean).exp().float()

    def schedule(self, num_steps):
        """t_0 > ... > t_{N-1} of EDM Eq. 5."""
        i = torch.arange(num_steps, dtype=torch.float64)
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return (a + i / (num_steps - 1) * (b - a)) ** self.rho

    @torch.no_grad()
    def sample(self, net: nn.Module, latents, cond, num_steps, cfg_weight=1.0):
        """Deterministic 2nd-order Heun sampler (EDM Algorithm 2), in float64."""
        t_steps = torch.cat([self.schedule(num_steps), torch.zeros(1, dtype=torch.float64)])
        t_steps = t_steps.to(latents.device)
        x_next = latents.double() * t_steps[0]
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:], strict=True)):
            x_cur = x_next
            d_cur = (x_cur - self.guided(net, x_cur, cond, t_cur, cfg_weight)) / t_cur
            x_next = x_cur + (t_next - t_cur) * d_cur
            if i < num_steps - 1:  # 2nd-order correction
                d_prime = (x_next - self.guided(net, x_next, cond, t_next, cfg_weight)) / t_next
                x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        return x_next.float()
