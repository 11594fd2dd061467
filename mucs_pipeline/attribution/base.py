"""The interface every attribution method implements."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
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
    components: dict[str, torch.Tensor] | None = None  # ensembles: other methods' (m, |Z|) scores

    def cached(self, name: str, compute: Callable[[], Any], mmap: bool = False) -> Any:
        """`compute()` once per run: read from `cache_dir/name` when an intact file is
        there, else computed and written atomically. `mmap`: see `artifacts.load`."""
        return io.cached(self.cache_dir / name, compute, mmap, self.cfg.get("strict", False))


class Method:
    """score(item) -> (scores over the training set, higher = more influential; info)."""

    name: str = ""

    def __init__(self, cfg: DictConfig, ctx: Context):
        self.cfg, self.ctx = cfg, ctx
        self.items_per_pass = 1  # generated items that score_many handles together

    def prepare(self, images: torch.Tensor, cond: torch.Tensor | None) -> None:
        """Work shared by all generated items (m, C, H, W), done once before scoring them."""

    def score(
        self, index: int, x_hat: torch.Tensor, c_hat: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def score_many(
        self, indices: list[int], images: list[torch.Tensor], conds: list[torch.Tensor | None]
    ) -> list[tuple[torch.Tensor, dict]]:
        """Several generated items; methods that batch them (MUCS) override this."""
        return [self.score(i, x, c) for i, x, c in zip(indices, images, conds, strict=True)]


# method kind -> (module of mucs_pipeline.attribution, class), imported on use
METHODS = {
    "mucs": ("mucs", "MUCS"),
    "random": ("random", "Random"),
    "pixel": ("similarity", "Pixel"),
    "condition": ("similarity", "Condition"),
    "clip": ("similarity", "CLIP"),
    "dino": ("similarity", "DINO"),
    "dtrak": ("dtrak", "DTRAK"),
    "das": ("dtrak", "DAS"),
    "forward_inf": ("ascent", "ForwardINF"),
    "abu": ("ascent", "AbU"),
    "ensemble": ("ensemble", "Ensemble"),
}


def build_method(cfg: DictConfig, ctx: Context) -> Method:
    """The method of a method config (`kind` when several configs share one class)."""
    kind = cfg.get("kind", cfg.name)
    if kind not in METHODS:
        raise ValueError(f"method.name={kind!r}: expected one of {sorted(METHODS)}")
    module, name = METHODS[kind]
    cls = getattr(importlib.import_module(f"mucs_pipeline.attribution.{module}"), name)
    return cls(cfg, ctx)
