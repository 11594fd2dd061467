"""Datasets as in-memory tensors: images in [-1, 1] plus an optional condition vector."""

from mucs_pipeline.data.base import ImageData, build_dataset, training_set

__all__ = ["ImageData", "build_dataset", "training_set"]
