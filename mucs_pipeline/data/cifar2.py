"""D-TRAK's CIFAR-2 (sail-sg/D-TRAK, CIFAR2/00_EDA.ipynb): CIFAR10's automobiles and horses,
5,000 training images drawn stratified by class from their 10,000 with scikit-learn's
train_test_split (random_state 42), and 1,000 test images drawn alike: its held-out queries.
Items keep D-TRAK's order and their CIFAR10 index names them, so scores line up with D-TRAK's.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split

from mucs_pipeline.data import cifar
from mucs_pipeline.data.base import ImageData


def _draw(data: ImageData, cfg: DictConfig, size: int) -> ImageData:
    """`size` of the items of `cfg.classes`, stratified, in train_test_split's order."""
    keep = torch.isin(data.labels, torch.tensor(list(cfg.classes))).nonzero()[:, 0].numpy()
    picked, _ = train_test_split(
        keep, train_size=size, random_state=cfg.split_seed, stratify=data.labels[keep].numpy()
    )
    return data.subset(torch.as_tensor(picked))


def load(cfg: DictConfig) -> ImageData:
    """The training set: `train_size` images of CIFAR10's training split."""
    return _draw(cifar.load(cfg), cfg, cfg.train_size)


def load_test(cfg: DictConfig) -> ImageData:
    """The held-out images: `test_size` of CIFAR10's test split (D-TRAK's idx-val)."""
    return _draw(cifar.load_test(cfg), cfg, cfg.test_size)
