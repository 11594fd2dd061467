"""CIFAR-style python batches (CIFAR10, ArtBench-10's python release) and the CIFAR10 dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mucs_pipeline.data.base import ImageData, one_hot

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def to_unit_range(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], resized (antialiased) to resolution."""
    x = images.float() / 127.5 - 1.0
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    return x.clamp(-1, 1)


def read_batches(
    folder: Path, names: list[str], resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] and labels from python-pickle batches ({'data': (N, 3*H*W), 'labels'}).

    These pickles are the datasets' own release format; they are read only from the
    configured data root. Each batch is resized as it is read, to bound memory.
    """
    xs, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        side = int(round((data.shape[1] / 3) ** 0.5))
        xs.append(to_unit_range(torch.from_numpy(data.reshape(-1, 3, side, side)), resolution))
        labels += list(batch["labels"])
    return torch.cat(xs), torch.tensor(labels, dtype=torch.long)


def read_labels(path: Path) -> torch.Tensor:
    """The labels of one python-pickle batch."""
    with open(path, "rb") as f:
        return torch.tensor(list(pickle.load(f, encoding="latin1")["labels"]), dtype=torch.long)


def label_names(folder: Path) -> list[str] | None:
    """Class names from a batches.meta / meta file, when there is one."""
    for name in ("batches.meta", "meta"):
        if (folder / name).exists():
            with open(folder / name, "rb") as f:
                meta = pickle.load(f, encoding="latin1")
            for key in ("label_names", "styles", "names"):
                if key in meta:
                    return list(meta[key])
    return None


def missing(folder: Path, names: list[str]) -> list[str]:
    return [n for n in names if not (folder / n).exists()]


def _split(cfg: DictConfig, names: list[str]) -> ImageData:
    """Batches `names` of CIFAR10 (torchvision's on-disk layout: <root>/cifar-10-batches-py)."""
    root = Path(cfg.root).expanduser()
    folder = root / "cifar-10-batches-py"
    if missing(folder, names) and cfg.download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)
    if missing(folder, names):
        raise FileNotFoundError(
            f"CIFAR10 not found: {folder} lacks {missing(folder, names)}. Download "
            f"{CIFAR10_URL} and extract it into {root}, or set dataset.download=true"
        )
    x, labels = read_batches(folder, names, cfg.resolution)
    cond = one_hot(labels, 10) if cfg.conditional else None
    return ImageData(x=x, labels=labels, cond=cond, class_names=label_names(folder))


def load(cfg: DictConfig) -> ImageData:
    """CIFAR10's training split."""
    return _split(cfg, TRAIN_BATCHES)


def load_test(cfg: DictConfig) -> ImageData:
    """CIFAR10's test split (validation losses)."""
    return _split(cfg, [TEST_BATCH])
