"""Loading what several stages share: the data, the diffusion variant, trained networks."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import distributed as dist
from mucs_pipeline.data import ImageData, build_dataset
from mucs_pipeline.models import Diffusion, build_diffusion
from mucs_pipeline.training import init_model, resolve_epochs

_DATASETS: dict[str, ImageData] = {}


def dataset(cfg: DictConfig) -> ImageData:
    """The training set, built once per process and dataset config."""
    key = io.config_hash(cfg.dataset)
    if key not in _DATASETS:
        _DATASETS[key] = build_dataset(cfg.dataset)
    return _DATASETS[key]


def training_set(cfg: DictConfig) -> ImageData:
    """The training set, read before any compute (an unreadable image stops a run here),
    with what depends on it settled: `pretrain.epochs` as steps, and a given F1
    (`pretrain.init_from`) checked against the configured network."""
    from mucs_pipeline.weights import init_from, load_init

    data = dataset(cfg)
    resolve_epochs(cfg, len(data))
    if init_from(cfg) is not None:
        load_init(cfg, data)  # a network of another architecture stops the run here
    return data


def diffusion(cfg: DictConfig) -> Diffusion:
    return build_diffusion(cfg.diffusion)


def device(cfg: DictConfig) -> torch.device:
    return dist.device(cfg.trainer)


def load_net(cfg: DictConfig, data: ImageData, path: Path) -> torch.nn.Module:
    """A network of the configured architecture with the weights saved at `path`."""
    net = init_model(cfg, data, cfg.seed)
    net.load_state_dict(io.load(path))
    return net.eval()
