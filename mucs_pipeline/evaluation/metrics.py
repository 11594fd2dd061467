"""Similarities between each original and regenerated item (higher = more alike)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mucs_pipeline.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageEncoder,
    clip_image_encoder,
    dino_encoder,
    to_rgb01,
)

log = logging.getLogger(__name__)
CPU = torch.device("cpu")


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"expected two (N, C, H, W) batches of equal shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    for x in (a, b):  # generated images are in [-1, 1]; a little overshoot is normal
        if x.numel() and (not torch.isfinite(x).all() or x.abs().max() > 1.5):
            raise ValueError(
                f"expected finite images scaled to [-1, 1], got values in "
                f"[{x.min().item():.3g}, {x.max().item():.3g}] (0-255 images?)"
            )


def ssim_sigma(resolution: int, sigma: float) -> float:
    """The Gaussian window's sigma: `sigma` (torchmetrics then takes 11 taps at 1.5), or on
    images no larger than that window, the sigma whose window is the largest odd size below
    the resolution, in the same sigma-to-size ratio (8 px digits: 7 taps, sigma 0.95)."""
    taps = _taps(sigma)
    if resolution > taps:
        return sigma
    size = resolution - 1 if resolution % 2 == 0 else resolution - 2
    return sigma * max(3, size) / taps


def _taps(sigma: float) -> int:
    """torchmetrics' Gaussian window size for `sigma` (it ignores kernel_size)."""
    return int(3.5 * sigma + 0.5) * 2 + 1


def ssim(a: torch.Tensor, b: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """SSIM per item (Wang et al. 2004) as the release computes it: torchmetrics on images
    mapped from [-1, 1] to [0, 1] (data range 1), Gaussian window: (N,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(a, b)
    a01, b01 = (((t.float() + 1) / 2).clamp(0, 1) for t in (a, b))
    sigma = ssim_sigma(a.shape[-1], cfg.ssim_sigma)
    return structural_similarity_index_measure(
        a01, b01, gaussian_kernel=True, sigma=sigma, data_range=1.0, reduction="none"
    ).float()


def neg_mse(a: torch.Tensor, b: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """Negative mean squared error per item: (N,)."""
    _check(a, b)
    return -(a.float() - b.float()).square().flatten(1).mean(dim=1)


def _cosine(encoder, a: torch.Tensor, b: torch.Tensor, batch: int, device) -> torch.Tensor:
    """Cosine of unit-norm embeddings of a and b, batch by batch: (N,)."""
    out = []
    for i in range(0, len(a), batch):
        ea = encoder(a[i : i + batch].to(device)).float()
        eb = encoder(b[i : i + batch].to(device)).float()
        out.append(F.cosine_similarity(ea, eb, dim=1).cpu())
    return torch.cat(out)


@functools.lru_cache(maxsize=4)
def sscd_encoder(path: str) -> ImageEncoder:
    """The SSCD copy-detection TorchScript model (sscd_disc_mixup): 320 px, ImageNet stats."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"SSCD model not found at {path!r}. Download "
            "https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt "
            "and set metric.sscd_weights to its path"
        )
    # TorchScript archives hold code and tensors, not pickled Python objects.
    net = torch.jit.load(path, map_location="cpu").eval()
    # Bilinear, as torchvision's Resize([320, 320]) in the SSCD release and the authors' code.
    return ImageEncoder(net, 320, IMAGENET_MEAN, IMAGENET_STD, mode="bilinear").eval()


def sscd(a, b, cfg, device=CPU):
    """Cosine of SSCD descriptors (copy detection)."""
    _check(a, b)
    return _cosine(sscd_encoder(str(cfg.sscd_weights)).to(device), a, b, cfg.batch_size, device)


VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16 weights, the LPIPS backbone


@functools.lru_cache(maxsize=2)
def lpips_model(net: str, torch_home: str | None) -> torch.nn.Module:
    """LPIPS (Zhang et al. 2018) with its published linear heads; torch_home=None gives a
    randomly initialised backbone of the same architecture (tests)."""
    import lpips

    if torch_home is not None:
        hub = Path(torch_home) / "hub"
        if not (hub / "checkpoints" / VGG16_FILE).is_file():
            raise FileNotFoundError(
                f"LPIPS needs torchvision's VGG16 weights at {hub / 'checkpoints' / VGG16_FILE}. "
                f"Download https://download.pytorch.org/models/{VGG16_FILE} there, or point "
                "metric.lpips_torch_home at a TORCH_HOME that has it"
            )
        torch.hub.set_dir(str(hub))  # where torchvision looks for the backbone
    return lpips.LPIPS(net=net, pnet_rand=torch_home is None, verbose=False).eval()


@torch.inference_mode()
def lpips_similarity(a, b, cfg, device=CPU):
    """1 - LPIPS distance (VGG), inputs resized to 224 px: identical images give 1."""
    _check(a, b)
    model = lpips_model(cfg.lpips_net, cfg.lpips_torch_home).to(device)

    def prep(x):
        x = to_rgb01(x.to(device)) * 2 - 1  # LPIPS takes RGB in [-1, 1]
        return F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)

    out = []
    for i in range(0, len(a), cfg.batch_size):
        d = model(prep(a[i : i + cfg.batch_size]), prep(b[i : i + cfg.batch_size]))
        out.append(1 - d.flatten().float().cpu())
    return torch.cat(out)


@functools.lru_cache(maxsize=2)
def _clip(model: str, pretrained: str | None, cache_dir: str | None) -> ImageEncoder:
    return clip_image_encoder(model, pretrained, cache_dir)


@functools.lru_cache(maxsize=2)
def _dino(arch: str, weights: str | None, image_size: int) -> ImageEncoder:
    return dino_encoder(arch, weights, image_size)


def clip_similarity(a, b, cfg, device=CPU):
    """Cosine of open_clip image embeddings."""
    _check(a, b)
    enc = _clip(cfg.clip_model, cfg.clip_pretrained, cfg.clip_cache_dir).to(device)
    return _cosine(enc, a, b, cfg.batch_size, device)


def dino_similarity(a, b, cfg, device=CPU):
    """Cosine of DINOv2 class-token embeddings."""
    _check(a, b)
    enc = _dino(cfg.dino_arch, cfg.dino_weights, cfg.dino_image_size).to(device)
    return _cosine(enc, a, b, cfg.batch_size, device)


METRICS = {
    "ssim": ssim,
    "neg_mse": neg_mse,
    "sscd": sscd,
    "lpips": lpips_similarity,
    "clip": clip_similarity,
    "dino": dino_similarity,
}
MODEL_METRICS = {"sscd", "lpips", "clip", "dino"}  # need weights and a device


def similarities(
    a: torch.Tensor, b: torch.Tensor, cfg: DictConfig, device=CPU
) -> dict[str, torch.Tensor]:
    """Every metric of the metric group, per item (higher = more alike).

    A metric whose weights are missing stops the run, unless `metric.skip_unavailable` is
    set: then it is left out with a warning.
    """
    unknown = set(cfg.names) - set(METRICS)
    if unknown:
        raise ValueError(
            f"metric.names has unknown metrics {sorted(unknown)}: "
            f"expected some of {sorted(METRICS)}"
        )
    out = {}
    for name in cfg.names:
        try:
            if name in MODEL_METRICS:
                out[name] = METRICS[name](a, b, cfg, device)
            else:
                out[name] = METRICS[name](a, b, cfg)
        except FileNotFoundError as err:
            if not cfg.get("skip_unavailable", False):
                raise
            log.warning("metric %s skipped (metric.skip_unavailable=true): %s", name, err)
    return out
