"""Any image folder: classes from subfolders (conditional) or a flat set of images."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torchvision.transforms import functional as TF

from mucs_pipeline.data.base import DatasetError, ImageData, one_hot

log = logging.getLogger(__name__)

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Greyscale modes beyond 8 bits (16-bit PNG and TIFF): convert("L") would clip them at 255.
HIGH_DEPTH = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _pixels(img: Image.Image, channels: int) -> Image.Image:
    """The image as L or RGB, or as F in [0, 1] when its values exceed 8 bits."""
    if img.mode in HIGH_DEPTH:
        return Image.fromarray((np.asarray(img, dtype=np.float32) / 65535.0).clip(0, 1))
    return img.convert("L" if channels == 1 else "RGB")


def load_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """Read, center-crop to a square, resize, and scale to [-1, 1].

    A file that is not a whole image (cut short, corrupt, a decompression bomb: more
    pixels than PIL.Image.MAX_IMAGE_PIXELS) raises DatasetError naming it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = _pixels(img, channels)
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DatasetError(f"{path}: not a readable image ({err}); remove or replace it") from None
    side = min(img.size)
    img = TF.center_crop(img, [side, side])
    img = TF.resize(img, [resolution, resolution], antialias=True)
    x = TF.to_tensor(img)  # (C, H, W) in [0, 1]
    return x.expand(channels, -1, -1) * 2.0 - 1.0


def files(cfg: DictConfig) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The training images in the order of the data's items, their class ids and the class
    names (None, None for an unconditional folder)."""
    if cfg.root is None:
        raise DatasetError("dataset.root is not set: pass dataset.root=/path/to/images")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset.root={str(root)!r} is not a directory: point it at a folder of images "
            "(one subfolder per class when dataset.conditional=true)"
        )
    if not cfg.conditional:
        return images_under(root), None, None
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and images_under(p))
    if not classes:
        raise DatasetError(
            f"dataset.root={str(root)!r} has no class subfolders with images; "
            "set dataset.conditional=false for a flat folder"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = images_under(root / name)
        paths += found
        labels += [label] * len(found)
    return paths, labels, classes


def load(cfg: DictConfig) -> ImageData:
    if cfg.channels not in (1, 3):
        raise DatasetError(f"dataset.channels={cfg.channels}: expected 1 or 3")
    paths, labels, classes = files(cfg)
    root = Path(cfg.root).expanduser()
    if not paths:
        raise DatasetError(f"dataset.root={str(root)!r} holds no images ({sorted(EXTENSIONS)})")
    others = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in EXTENSIONS]
    if others:
        kinds = sorted({p.suffix or p.name for p in others})
        log.warning(
            "dataset.root=%r: skipped %d files that are not images (%s)",
            str(root), len(others), ", ".join(kinds),
        )  # fmt: skip
    x = torch.stack([load_image(p, cfg.resolution, cfg.channels) for p in paths])
    label_tensor = None if labels is None else torch.tensor(labels, dtype=torch.long)
    cond = None if label_tensor is None else one_hot(label_tensor, len(classes))
    return ImageData(x=x, labels=label_tensor, cond=cond, class_names=classes)
