"""The interface every attribution method implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion


@dataclass
class Context:
    """What a method may use: the training set, F1, the diffusion variant, L_null."""

    cfg: DictConfig  # the whole run config (pretraining recipe, seed)
    data: ImageData
    diffusion: Diffusion
    net: torch.nn.Module  # F1: the EMA weights of the pretrained model
    loss_null: float
    device: torch.device
    cache_dir: Path  # per-run cache for quantities shared by all generated items


class Method:
    """score(item) -> (scores over the training set, higher = more influential; info)."""

    name: str = ""

    def __init__(self, cfg: DictConfig, ctx: Context):
        self.cfg, self.ctx = cfg, ctx

    def score(
        self, index: int, x_hat: torch.Tensor, c_hat: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError


def build_method(cfg: DictConfig, ctx: Context) -> Method:
    from mucs_pipeline.attribution.mucs import MUCS
    from mucs_pipeline.attribution.pixel import Pixel
    from mucs_pipeline.attribution.random import Random

    methods = {m.name: m for m in (MUCS, Pixel, Random)}
    if cfg.name not in methods:
        raise ValueError(f"method.name={cfg.name!r}: expected one of {sorted(methods)}")
    return methods[cfg.name](cfg, ctx)
