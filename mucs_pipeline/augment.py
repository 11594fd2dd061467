"""EDM's geometric augmentation pipeline with augmentation labels (Karras et al. 2022, App. F.2).

The authors' release trains every dataset with EDM's pipeline at p = 0.12: horizontal flips
of half the draws (unlabelled: a flip is a symmetry of the data), and, each with
probability p, isotropic scaling, anisotropic scaling, rotation and translation. The
network is told which draws were transformed (label 1) so that it learns from them
without generating transformed images (sampling uses label 0).

Written here rather than taken from a library: torchvision's transforms draw from the
global generator, one image at a time, and report no labels; this draws every parameter
from the step's own generator (common random numbers, resume) for the whole batch. The
transforms are one bilinear `grid_sample` with reflection padding; EDM additionally
resamples at twice the resolution through a wavelet filter against aliasing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

OPS = ("scale", "rotate", "aniso", "translate")  # in EDM's order
SCALE_STD = 0.2  # log2 std of isotropic scaling (EDM's scale_std)
ANISO_STD = 0.2  # log2 std of anisotropic scaling (aniso_std)
ANISO_ROTATE_PROB = 0.5  # anisotropy in a rotated frame (aniso_rotate_prob)
TRANSLATE_STD = 0.125  # translation std as a fraction of the image size (translate_frac_std)


def active(cfg: DictConfig | None) -> bool:
    """Whether a recipe augments at all."""
    return cfg is not None and cfg.p > 0


def labelled(cfg: DictConfig | None) -> bool:
    """Whether a recipe's draws carry augmentation labels (any geometric op on)."""
    return active(cfg) and len(cfg.ops) > 0


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    c, s = theta.cos(), theta.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (N, 2, 2)


def draw(n: int, cfg: DictConfig, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per-draw flips (N,) bool, inverse transforms (N, 2, 3) in normalised coordinates, and
    labels (N,) long: 1 where a geometric op was applied."""
    p = cfg.p
    flip = halves(n, gen) if cfg.xflip else torch.zeros(n, dtype=torch.bool)
    linear = torch.eye(2).expand(n, 2, 2)  # maps output coordinates to input ones (G^-1)
    shift = torch.zeros(n, 2)
    applied = torch.zeros(n, dtype=torch.bool)
    for op in cfg.ops:
        if op not in OPS:
            raise ValueError(f"pretrain.augment.ops: unknown {op!r}, expected some of {OPS}")
        on = torch.rand(n, generator=gen) < p  # this op, for which draws
        applied |= on
        if op == "scale":
            s = (torch.randn(n, generator=gen) * on * SCALE_STD).exp2()
            linear = linear / s[:, None, None]
        elif op == "rotate":
            linear = linear @ _rotation((torch.rand(n, generator=gen) * 2 - 1) * math.pi * on)
        elif op == "aniso":
            s = (torch.randn(n, generator=gen) * on * ANISO_STD).exp2()
            r = (torch.rand(n, generator=gen) * 2 - 1) * math.pi
            r = r * (on & (torch.rand(n, generator=gen) < ANISO_ROTATE_PROB))
            stretch = torch.diag_embed(torch.stack([1 / s, s], -1))
            linear = linear @ _rotation(r) @ stretch @ _rotation(-r)
        else:  # translate: t pixels are 2 t / size in normalised coordinates
            w = torch.randn(n, 2, generator=gen) * on[:, None]
            shift = shift + (linear @ (-2 * TRANSLATE_STD * w)[:, :, None])[:, :, 0]
    theta = torch.cat([linear, shift[:, :, None]], dim=2)  # (N, 2, 3)
    return flip, theta, applied.long()


def halves(n: int, gen: torch.Generator) -> torch.Tensor:
    """(N,) bool: which draws to flip, each with probability 1/2 (EDM's xflip)."""
    return torch.randint(2, (n,), generator=gen) == 1


def hflip(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Flip the images `which` (N,) bool horizontally."""
    return torch.where(which.to(x.device)[:, None, None, None], x.flip(-1), x)


def xflip(x: torch.Tensor, cfg: DictConfig | None, gen: torch.Generator) -> torch.Tensor:
    """The recipe's flips alone: half the images flipped where it flips (it is active and
    `xflip`), as AbU's Fisher sees the training items; draws nothing otherwise."""
    if not (active(cfg) and cfg.xflip):
        return x
    return hflip(x, halves(len(x), gen))


def transform(x: torch.Tensor, flip: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply flips, then the affine maps (bilinear, reflected borders): (N, C, H, W)."""
    x = hflip(x, flip)
    identity = torch.eye(2, 3).expand_as(theta)
    moved = (theta != identity).flatten(1).any(1)
    if not moved.any():
        return x
    grid = F.affine_grid(theta[moved].to(x), list(x[moved].shape), align_corners=False)
    out = x.clone()
    out[moved] = F.grid_sample(
        x[moved], grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return out


def augment(
    x: torch.Tensor, cfg: DictConfig | None, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augmented images and their labels ((N,) long, or None when the recipe has none).

    Draws nothing when the recipe is off, so p = 0 leaves a random stream unchanged.
    """
    if not active(cfg):
        return x, None
    flip, theta, labels = draw(len(x), cfg, gen)
    return transform(x, flip, theta), (labels if labelled(cfg) else None)
