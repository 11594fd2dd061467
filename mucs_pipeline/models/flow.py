"""Flow matching / rectified flow: x_t = (1 - t) x + t n, velocity target n - x, ODE sampling."""

from __future__ import annotations

import torch

from mucs_pipeline.models.diffusion import Diffusion


class Flow(Diffusion):
    """sigma is the time t in [0, 1] (t = 1: pure noise)."""

    name = "flow"

    def __init__(self, t_mean: float = 0.0, t_std: float = 1.0, solver: str = "heun"):
        if solver not in ("euler", "heun"):
            raise ValueError(f"diffusion.solver={solver!r}: expected 'euler' or 'heun'")
        self.t_mean, self.t_std, self.solver = t_mean, t_std, solver

    def predict(self, net, x, cond, sigma):
        """The predicted velocity v(x_t, t)."""
        return net(x.float(), sigma.float().reshape(-1), cond).float()

    def output(self, net, x, cond, sigma, noise):
        t = sigma.float().reshape(-1, 1, 1, 1)
        return self.predict(net, (1 - t) * x + t * noise, cond, sigma)

    def loss(self, net, x, cond, sigma, noise):
        """||(n - x) - F(x_t, t)||^2, mean over pixels."""
        return (
            ((noise - x) - self.output(net, x, cond, sigma, noise)).square().flatten(1).mean(dim=1)
        )

    def training_sigma(self, n, generator):
        """Logit-normal t (Esser et al. 2024): sigmoid of N(t_mean, t_std^2)."""
        return torch.sigmoid(torch.randn(n, generator=generator) * self.t_std + self.t_mean)

    def training_quantile(self, u):
        return torch.sigmoid(torch.special.ndtri(u.double()) * self.t_std + self.t_mean).float()

    def schedule(self, num_steps):
        """num_steps times evenly spaced from 1 down to (not including) 0."""
        return torch.linspace(1, 0, num_steps + 1, dtype=torch.float64)[:-1]

    @torch.no_grad()
    def sample(self, net, latents, cond, num_steps, cfg_weight=1.0):
        """Euler or Heun integration of dx/dt = v from t = 1 to t = 0 (last step Euler, as EDM)."""
        ts = torch.cat([self.schedule(num_steps), torch.zeros(1, dtype=torch.float64)])
        ts = ts.to(latents.device)
        x = latents.double()
        for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:], strict=True)):
            v = self.guided(net, x, cond, t_cur, cfg_weight)
            x_next = x + (t_next - t_cur) * v
            if self.solver == "heun" and i < num_steps - 1:
                v_next = self.guided(net, x_next, cond, t_next, cfg_weight)
                x_next = x + (t_next - t_cur) * 0.5 * (v + v_next)
            x = x_next
        return x.float()
