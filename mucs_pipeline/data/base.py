"""The dataset record every stage uses, and the registry that builds it from config."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from omegaconf import DictConfig


class DatasetError(ValueError):
    """The dataset's files cannot be used; the message names the file and what to do."""


@dataclass
class ImageData:
    """A training set held in memory: x in [-1, 1], (N, C, H, W); cond (N, D) or None."""

    x: torch.Tensor
    labels: torch.Tensor | None  # (N,) class ids, when the data has classes
    cond: torch.Tensor | None  # (N, D) condition vectors fed to the network
    class_names: list[str] | None = None
    # Conditions generated items draw from (COCO: test-split captions); None: the classes.
    gen_cond: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def conditional(self) -> bool:
        return self.cond is not None

    @property
    def cond_dim(self) -> int:
        return 0 if self.cond is None else self.cond.shape[1]

    def subset(self, idx: torch.Tensor) -> ImageData:
        """The items at `idx` (indices or a boolean mask)."""
        return ImageData(
            x=self.x[idx],
            labels=None if self.labels is None else self.labels[idx],
            cond=None if self.cond is None else self.cond[idx],
            class_names=self.class_names,
            gen_cond=self.gen_cond,
        )

    def condition_for_label(self, label: int) -> torch.Tensor:
        """The condition vector of a class id (one-hot)."""
        return one_hot(torch.tensor([label]), self.cond_dim)[0]


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()


def take_subset(data: ImageData, size: int | None, seed: int) -> ImageData:
    """A fixed random subset, the same for every run seed (it depends on `seed` only)."""
    if size is None or size >= len(data):
        return data
    if size <= 0:
        raise DatasetError(f"dataset.subset={size}: expected a positive size or null")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size]
    return data.subset(idx.sort().values)


# dataset.name -> the module of mucs_pipeline.data whose load(cfg) builds it (imported on use)
DATASETS = {
    "digits": "digits",
    "folder": "folder",
    "cifar10": "cifar",
    "artbench10": "artbench",
    "coco": "coco",
}


def build_dataset(cfg: DictConfig) -> ImageData:
    """Build the training set named by `cfg.name` (dataset group)."""
    if cfg.name not in DATASETS:
        raise ValueError(f"dataset.name={cfg.name!r}: expected one of {sorted(DATASETS)}")
    data = importlib.import_module(f"mucs_pipeline.data.{DATASETS[cfg.name]}").load(cfg)
    return take_subset(data, cfg.get("subset"), cfg.get("subset_seed", 0))
