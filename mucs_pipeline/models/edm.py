"""EDM (Karras et al. 2022): preconditioning, the per-sample loss, and the Heun sampler."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn


class EDM:
    """The EDM diffusion variant; every method computes its losses through `loss`."""

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

    def denoise(
        self, net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise), in float32."""
        x = x.float()
        sigma = sigma.float().reshape(-1)
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in self.precond(sigma))
        F_x = net(c_in * x, c_noise.reshape(-1), cond)
        return c_skip * x + c_out * F_x.float()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def loss(
        self,
        net: nn.Module,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        sigma: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """Per-sample loss L(z, sigma, n, F): weighted squared error, mean over pixels -> (N,)."""
        D_x = self.denoise(net, x + sigma.reshape(-1, 1, 1, 1) * noise, sigma, cond)
        err = (D_x - x).square().flatten(1).mean(dim=1)  # (N,)
        return self.loss_weight(sigma) * err

    def training_sigma(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """ln(sigma) ~ N(P_mean, P_std^2), the training noise distribution."""
        return (torch.randn(n, generator=generator) * self.P_std + self.P_mean).exp()

    def schedule(self, num_steps: int) -> torch.Tensor:
        """Generation noise levels t_0 > ... > t_{N-1}, then t_N = 0 (EDM Eq. 5), float64."""
        i = torch.arange(num_steps, dtype=torch.float64)
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        t = (a + i / (num_steps - 1) * (b - a)) ** self.rho
        return torch.cat([t, torch.zeros(1, dtype=torch.float64)])

    @torch.no_grad()
    def sample(
        self,
        net: nn.Module,
        latents: torch.Tensor,
        cond: torch.Tensor | None,
        num_steps: int,
        cfg_weight: float = 1.0,
    ) -> torch.Tensor:
        """Deterministic 2nd-order Heun sampler (EDM Algorithm 2), classifier-free guided."""

        def D(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            sigma = t.expand(x.shape[0])
            if cond is None or cfg_weight == 1.0:
                return self.denoise(net, x, sigma, cond).double()
            both = self.denoise(
                net, torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, 0 * cond])
            ).double()
            d_cond, d_uncond = both.chunk(2)
            return d_uncond + cfg_weight * (d_cond - d_uncond)  # every channel is guided

        t_steps = self.schedule(num_steps).to(latents.device)
        x_next = latents.double() * t_steps[0]
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:], strict=True)):
            x_cur = x_next
            d_cur = (x_cur - D(x_cur, t_cur)) / t_cur
            x_next = x_cur + (t_next - t_cur) * d_cur
            if i < num_steps - 1:  # 2nd-order correction
                d_prime = (x_next - D(x_next, t_next)) / t_next
                x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        return x_next.float()


def build_diffusion(cfg: DictConfig) -> EDM:
    """The diffusion variant named by the diffusion group."""
    if cfg.name != "edm":
        raise ValueError(f"diffusion.name={cfg.name!r}: expected 'edm'")
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("name")
    return EDM(**kwargs)
