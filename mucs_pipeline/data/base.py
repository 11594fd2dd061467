"""The dataset record every stage uses, and the registry that builds it from config."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from mucs_pipeline.artifacts import config_hash


class DatasetError(ValueError):
    """The dataset's files cannot be used; the message names the file and what to do."""


@dataclass
class ImageData:
    """A training set held in memory: x in [-1, 1], (N, C, H, W); cond (N, D) or None."""

    x: torch.Tensor
    labels: torch.Tensor | None  # (N,) class ids, when the data has classes
    cond: torch.Tensor | None  # (N, D) condition vectors fed to the network
    class_names: list[str] | None = None
    # Conditions generated items draw from, the test split's (paper App. A.2: "a
    # conditioning c from the test set"); None: generated items cycle through the classes.
    gen_cond: torch.Tensor | None = None
    # Several conditions per item (COCO: every caption of an image), flattened: item i's
    # are cond_options[cond_offsets[i]:cond_offsets[i + 1]]. Training draws one of them
    # per access, as the release; `cond` holds the first, used everywhere else.
    cond_options: torch.Tensor | None = None  # (M, D)
    cond_offsets: torch.Tensor | None = None  # (N + 1,)
    # Each item's index in the dataset's own split (what a `subset` kept), which names it;
    # None: the items are the whole split in order.
    index: torch.Tensor | None = None  # (N,)

    def __len__(self) -> int:
        return self.x.shape[0]

    def source_index(self) -> list[int]:
        """Each item's index in the dataset's own split."""
        return list(range(len(self))) if self.index is None else self.index.tolist()

    @property
    def conditional(self) -> bool:
        return self.cond is not None

    @property
    def cond_dim(self) -> int:
        return 0 if self.cond is None else self.cond.shape[1]

    def subset(self, idx: torch.Tensor) -> ImageData:
        """The items at `idx` (indices or a boolean mask)."""
        options, offsets = self.cond_options, self.cond_offsets
        if options is not None:
            kept = torch.arange(len(self))[idx]
            options = torch.cat([options[offsets[i] : offsets[i + 1]] for i in kept.tolist()])
            counts = offsets[1:][kept] - offsets[:-1][kept]
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return ImageData(
            x=self.x[idx],
            labels=None if self.labels is None else self.labels[idx],
            cond=None if self.cond is None else self.cond[idx],
            class_names=self.class_names,
            gen_cond=self.gen_cond,
            cond_options=options,
            cond_offsets=offsets,
            index=(torch.arange(len(self)) if self.index is None else self.index)[idx],
        )

    def training_cond(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        """Conditions of items `idx` for a training draw: one of each item's options drawn
        from `gen`, or `cond` when items have one (then nothing is drawn)."""
        if self.cond_options is None:
            return None if self.cond is None else self.cond[idx]
        start, end = self.cond_offsets[idx], self.cond_offsets[idx + 1]
        pick = start + (torch.rand(len(idx), generator=gen) * (end - start)).long()
        return self.cond_options[pick]

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
    return data.subset(subset_indices(len(data), size, seed))


def subset_indices(n: int, size: int, seed: int) -> torch.Tensor:
    """The sorted indices of the fixed random subset of `size` of `n` items."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


# dataset.name -> the module of mucs_pipeline.data whose load(cfg) builds it (imported on use)
DATASETS = {
    "digits": "digits",
    "folder": "folder",
    "cifar10": "cifar",
    "cifar2": "cifar2",
    "artbench10": "artbench",
    "coco": "coco",
}


def build_dataset(cfg: DictConfig, split: str = "train") -> ImageData:
    """The training set named by `cfg.name` (dataset group), or with split="test" its
    held-out split (validation losses for early stopping): the dataset's own test split,
    else the items a `subset` leaves out of the training set."""
    if cfg.name not in DATASETS:
        raise ValueError(f"dataset.name={cfg.name!r}: expected one of {sorted(DATASETS)}")
    module = importlib.import_module(f"mucs_pipeline.data.{DATASETS[cfg.name]}")
    if split == "test" and hasattr(module, "load_test"):
        return module.load_test(cfg)
    data = module.load(cfg)
    size, seed = cfg.get("subset"), cfg.get("subset_seed", 0)
    if split == "train":
        return take_subset(data, size, seed)
    if size is None or size >= len(data):
        raise ValueError(
            f"dataset {cfg.name!r} has no held-out split (it has no test split and "
            "dataset.subset uses every item): early stopping (pretrain.patience) needs one"
        )
    held_out = torch.ones(len(data), dtype=torch.bool)
    held_out[subset_indices(len(data), size, seed)] = False
    return data.subset(held_out)


_TRAINING_SETS: dict[str, ImageData] = {}


def training_set(cfg: DictConfig) -> ImageData:
    """The training set of a dataset config, read once per process and config."""
    key = config_hash(cfg)
    if key not in _TRAINING_SETS:
        _TRAINING_SETS[key] = build_dataset(cfg)
    return _TRAINING_SETS[key]
