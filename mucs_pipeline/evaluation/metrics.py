"""Similarities between each original and regenerated item (higher = more alike)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"expected two (N, C, H, W) batches of equal shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def ssim_window(resolution: int, kernel: int, sigma: float) -> tuple[int, float]:
    """The (7, 1.5) Gaussian window, shrunk on small images to an odd size <= resolution/2
    with sigma scaled alike (8 px digits: 3 taps, sigma 0.64)."""
    half = resolution // 2
    size = max(3, min(kernel, half if half % 2 else half - 1))
    return size, sigma * size / kernel


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """A normalised 2-D Gaussian window, (size, size)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """SSIM per item (Wang et al. 2004), images in [-1, 1]: (N,).

    Written here because torchmetrics and scikit-image derive the Gaussian window's size
    from sigma (11 taps at sigma 1.5); the protocol needs both set (7 taps, sigma 1.5).
    Statistics over the valid region only, as scikit-image does after its border crop.
    """
    _check(a, b)
    size, sigma = ssim_window(a.shape[-1], cfg.ssim_kernel, cfg.ssim_sigma)
    a, b = a.double(), b.double()
    channels = a.shape[1]
    window = gaussian_window(size, sigma).expand(channels, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)  # depthwise, valid

    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2  # data range 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.flatten(1).mean(dim=1).float()


def neg_mse(a: torch.Tensor, b: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """Negative mean squared error per item: (N,)."""
    _check(a, b)
    return -(a.float() - b.float()).square().flatten(1).mean(dim=1)


METRICS = {"ssim": ssim, "neg_mse": neg_mse}


def similarities(a: torch.Tensor, b: torch.Tensor, cfg: DictConfig) -> dict[str, torch.Tensor]:
    """Every metric of the metric group, per item."""
    unknown = set(cfg.names) - set(METRICS)
    if unknown:
        raise ValueError(
            f"metric.names has unknown metrics {sorted(unknown)}: "
            f"expected some of {sorted(METRICS)}"
        )
    return {name: METRICS[name](a, b, cfg) for name in cfg.names}
