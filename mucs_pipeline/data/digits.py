"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, the offline default."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from sklearn.datasets import load_digits

from mucs_pipeline.data.base import ImageData, one_hot


def load(cfg: DictConfig) -> ImageData:
    bunch = load_digits()
    # Pixel values are integers in [0, 16]; scale to [-1, 1] as for every image dataset.
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # (N, 1, 8, 8)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    cond = one_hot(labels, 10) if cfg.conditional else None
    return ImageData(x=x, labels=labels, cond=cond, class_names=[str(i) for i in range(10)])
