"""ArtBench-10 (Liao et al. 2022): the 256x256 ImageFolder release or its python release."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mucs_pipeline.data import cifar, folder
from mucs_pipeline.data.base import ImageData, one_hot

URLS = {
    "imagefolder": "https://artbench.eecs.berkeley.edu/files/artbench-10-imagefolder-split.tar",
    "python": "https://artbench.eecs.berkeley.edu/files/artbench-10-python.tar.gz",
}
FOLDERS = {"imagefolder": "artbench-10-imagefolder-split/train", "python": "artbench-10-batches-py"}


def load(cfg: DictConfig) -> ImageData:
    """The training split, resized to cfg.resolution and conditioned on the style id."""
    if cfg.format not in FOLDERS:
        raise ValueError(f"dataset.format={cfg.format!r}: expected one of {sorted(FOLDERS)}")
    root = Path(cfg.root).expanduser()
    where = root / FOLDERS[cfg.format]
    if cfg.format == "imagefolder":
        if not where.is_dir():
            raise FileNotFoundError(
                f"ArtBench-10 not found: {where} does not exist. Download {URLS['imagefolder']} "
                f"and extract it into {root} (or use dataset.format=python)"
            )
        return folder.load(OmegaConf.merge(cfg, {"root": str(where), "conditional": True}))
    if cifar.missing(where, cifar.TRAIN_BATCHES):
        raise FileNotFoundError(
            f"ArtBench-10 not found: {where} lacks {cifar.missing(where, cifar.TRAIN_BATCHES)}. "
            f"Download {URLS['python']} and extract it into {root}"
        )
    x, labels = cifar.read_batches(where, cifar.TRAIN_BATCHES, cfg.resolution)
    return ImageData(
        x=x, labels=labels, cond=one_hot(labels, 10), class_names=cifar.label_names(where)
    )
