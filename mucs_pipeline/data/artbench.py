"""ArtBench-10 (Liao et al. 2022): the 256x256 ImageFolder release or its python release."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline.data import cifar, folder
from mucs_pipeline.data.base import ImageData, one_hot

URLS = {
    "imagefolder": "https://artbench.eecs.berkeley.edu/files/artbench-10-imagefolder-split.tar",
    "python": "https://artbench.eecs.berkeley.edu/files/artbench-10-python.tar.gz",
}
SPLITS = {
    "imagefolder": {"train": "artbench-10-imagefolder-split/train",
                    "test": "artbench-10-imagefolder-split/test"},
    "python": {"train": "artbench-10-batches-py", "test": "artbench-10-batches-py"},
}  # fmt: skip


def _split(cfg: DictConfig, split: str) -> ImageData:
    """The `split` (train or test) of either release, resized to cfg.resolution and
    conditioned on the style id."""
    if cfg.format not in SPLITS:
        raise ValueError(f"dataset.format={cfg.format!r}: expected one of {sorted(SPLITS)}")
    root = Path(cfg.root).expanduser()
    where = root / SPLITS[cfg.format][split]
    if cfg.format == "imagefolder":
        if not where.is_dir():
            raise FileNotFoundError(
                f"ArtBench-10 not found: {where} does not exist. Download {URLS['imagefolder']} "
                f"and extract it into {root} (or use dataset.format=python)"
            )
        return folder.load(OmegaConf.merge(cfg, {"root": str(where), "conditional": True}))
    batches = cifar.TRAIN_BATCHES if split == "train" else [cifar.TEST_BATCH]
    if cifar.missing(where, batches):
        raise FileNotFoundError(
            f"ArtBench-10 not found: {where} lacks {cifar.missing(where, batches)}. "
            f"Download {URLS['python']} and extract it into {root}"
        )
    x, labels = cifar.read_batches(where, batches, cfg.resolution)
    return ImageData(
        x=x, labels=labels, cond=one_hot(labels, 10), class_names=cifar.label_names(where)
    )


def held_out_labels(cfg: DictConfig) -> torch.Tensor:
    """The style ids of the test split, read without decoding its images."""
    where = Path(cfg.root).expanduser() / SPLITS[cfg.format]["test"]
    if cfg.format == "python":
        if cifar.missing(where, [cifar.TEST_BATCH]):
            raise FileNotFoundError(
                f"ArtBench-10's test split not found: {where / cifar.TEST_BATCH}. Download "
                f"{URLS['python']} and extract it into {cfg.root}"
            )
        return cifar.read_labels(where / cifar.TEST_BATCH)
    if not where.is_dir():
        raise FileNotFoundError(
            f"ArtBench-10's test split not found: {where} does not exist. Download "
            f"{URLS['imagefolder']} and extract it into {cfg.root}"
        )
    classes = sorted(p for p in where.iterdir() if p.is_dir())
    counts = [len(folder.images_under(c)) for c in classes]
    return torch.repeat_interleave(torch.arange(len(classes)), torch.tensor(counts))


def load(cfg: DictConfig) -> ImageData:
    """The training split; generated items take the styles of test-split items (App. A.2)."""
    data = _split(cfg, "train")
    data.gen_cond = one_hot(held_out_labels(cfg), 10)
    return data


def load_test(cfg: DictConfig) -> ImageData:
    """The test split (generation conditions, validation losses)."""
    return _split(cfg, "test")
