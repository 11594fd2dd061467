"""Any image folder: classes from subfolders (conditional) or a flat set of images."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image
from torchvision.transforms import functional as TF

from mucs_pipeline.data.base import ImageData, one_hot

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def load_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """Read, center-crop to a square, resize, and scale to [-1, 1]."""
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        side = min(img.size)
        img = TF.center_crop(img, [side, side])
        img = TF.resize(img, [resolution, resolution], antialias=True)
        return TF.to_tensor(img) * 2.0 - 1.0  # (C, H, W)


def load(cfg: DictConfig) -> ImageData:
    if cfg.root is None:
        raise ValueError("dataset.root is not set: pass dataset.root=/path/to/images")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset.root={str(root)!r} is not a directory: point it at a folder of images "
            "(one subfolder per class when dataset.conditional=true)"
        )
    if cfg.channels not in (1, 3):
        raise ValueError(f"dataset.channels={cfg.channels}: expected 1 or 3")
    if cfg.conditional:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and images_under(p))
        if not classes:
            raise FileNotFoundError(
                f"dataset.root={str(root)!r} has no class subfolders with images; "
                "set dataset.conditional=false for a flat folder"
            )
        paths, labels = [], []
        for label, name in enumerate(classes):
            found = images_under(root / name)
            paths += found
            labels += [label] * len(found)
    else:
        classes, paths = None, images_under(root)
        labels = None
    if not paths:
        raise FileNotFoundError(
            f"dataset.root={str(root)!r} holds no images ({sorted(EXTENSIONS)})"
        )
    x = torch.stack([load_image(p, cfg.resolution, cfg.channels) for p in paths])
    label_tensor = None if labels is None else torch.tensor(labels, dtype=torch.long)
    cond = None if label_tensor is None else one_hot(label_tensor, len(classes))
    return ImageData(x=x, labels=label_tensor, cond=cond, class_names=classes)
