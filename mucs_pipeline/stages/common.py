"""Loading what several stages share: the data, the diffusion variant, trained networks."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import distributed as dist
from mucs_pipeline.data import ImageData, training_set
from mucs_pipeline.models import Diffusion, build_diffusion
from mucs_pipeline.training import init_model


def dataset(cfg: DictConfig) -> ImageData:
    """The training set, read once per process (config.prepare has read it first)."""
    return training_set(cfg.dataset)


def diffusion(cfg: DictConfig) -> Diffusion:
    return build_diffusion(cfg.diffusion)


def device(cfg: DictConfig) -> torch.device:
    return dist.device(cfg.trainer)


def load_net(cfg: DictConfig, data: ImageData, path: Path) -> torch.nn.Module:
    """A network of the configured architecture with the weights saved at `path`."""
    net = init_model(cfg, data, cfg.seed)
    net.load_state_dict(io.load(path))
    return net.eval()
