"""Similarities between each original and regenerated item (higher = more alike)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torchmetrics.functional.image import structural_similarity_index_measure


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"expected two (N, C, H, W) batches of equal shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def ssim_window(resolution: int, kernel: int, sigma: float) -> tuple[int, float]:
    """The paper's Gaussian window (7, 1.5), shrunk to an odd size <= resolution/2."""
    half = resolution // 2
    size = max(3, min(kernel, half if half % 2 else half - 1))
    return size, sigma * size / kernel


def ssim(a: torch.Tensor, b: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """SSIM per item, images in [-1, 1]: (N,)."""
    _check(a, b)
    size, sigma = ssim_window(a.shape[-1], cfg.ssim_kernel, cfg.ssim_sigma)
    return structural_similarity_index_measure(
        a.float(),
        b.float(),
        gaussian_kernel=True,
        sigma=sigma,
        kernel_size=size,
        data_range=2.0,
        reduction="none",
    )


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
