"""Image grids: originals next to their regenerations."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image


def save_grid(rows: list[torch.Tensor], path: Path, min_size: int = 32) -> None:
    """One row per batch of (N, C, H, W) images in [-1, 1]; small images upscaled (nearest)."""
    images = torch.cat(rows)
    scale = max(1, min_size // images.shape[-1])
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    tmp = path.with_name(f".{path.stem}.tmp.png")
    save_image((images + 1) / 2, tmp, nrow=len(rows[0]), padding=2, pad_value=1.0)
    tmp.replace(path)
