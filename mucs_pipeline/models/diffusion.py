"""The interface every diffusion variant implements, so that every method runs on all of them.

A variant names its noise level `sigma` whatever it is (EDM's sigma, DDPM's timestep,
flow matching's time); methods only pass it through, with the noise, to `loss`. Every
call takes its arguments in one order, (net, x, cond, sigma[, noise]): the paper's
M(x, c, sigma, n) of App. A.1.
"""

from __future__ import annotations

import torch
from torch import nn


def condition_or_null(cond: torch.Tensor | None, x: torch.Tensor, dim: int) -> torch.Tensor:
    """A network's condition vectors: `cond`, or for None the null condition (the zero
    vector, what classifier-free guidance's unconditional branch passes) for every item."""
    return torch.zeros(x.shape[0], dim, device=x.device) if cond is None else cond


def labels_or_unaugmented(aug: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A network's augmentation labels: `aug`, or for None label 0 (not augmented, as in
    sampling) for every item."""
    return torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if aug is None else aug


class Diffusion:
    """Per-sample loss with explicit noise level and noise; training levels; schedule; sampler."""

    name = ""

    def predict(
        self, net: nn.Module, x: torch.Tensor, cond: torch.Tensor | None, sigma: torch.Tensor
    ) -> torch.Tensor:
        """The model's prediction in this variant's parameterisation, float32."""
        raise NotImplementedError

    def loss(
        self,
        net: nn.Module,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        sigma: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """L(z, sigma, n, F) per sample, mean over pixels: (N,)."""
        raise NotImplementedError

    def output(
        self,
        net: nn.Module,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        sigma: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """The network's raw output at the noised input, (N, C, H, W) float32.

        The epsilon of DDPM, the velocity of flow matching, EDM's preconditioned F: the
        function whose gradients D-TRAK (its squared norm) and DAS (its mean) use.
        """
        raise NotImplementedError

    def training_sigma(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n noise levels from the training distribution."""
        raise NotImplementedError

    def training_quantile(self, u: torch.Tensor) -> torch.Tensor:
        """The levels at quantiles u in (0, 1) of `training_sigma`'s distribution: a
        stratified bank of the training distribution (LDS's loss bank)."""
        raise NotImplementedError

    def schedule(self, num_steps: int) -> torch.Tensor:
        """The noise levels a `num_steps` sampler evaluates the network at, descending, float64."""
        raise NotImplementedError

    def sample(
        self,
        net: nn.Module,
        latents: torch.Tensor,
        cond: torch.Tensor | None,
        num_steps: int,
        cfg_weight: float = 1.0,
    ) -> torch.Tensor:
        """Deterministic sampling from unit-variance latents (one RNG per seed upstream)."""
        raise NotImplementedError

    def guided(
        self,
        net: nn.Module,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        sigma: torch.Tensor,
        cfg_weight: float,
    ) -> torch.Tensor:
        """Classifier-free guided prediction at one level, float64; every channel is guided."""
        level = sigma.expand(x.shape[0])
        if cond is None or cfg_weight == 1.0:
            return self.predict(net, x, cond, level).double()
        both = self.predict(
            net, torch.cat([x, x]), torch.cat([cond, 0 * cond]), torch.cat([level, level])
        ).double()
        pred_cond, pred_uncond = both.chunk(2)  # the null condition is the zero vector
        return pred_uncond + cfg_weight * (pred_cond - pred_uncond)
