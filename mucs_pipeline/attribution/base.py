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
    components: dict[str, torch.Tensor] | None = None  # ensembles: other methods' (m, |Z|) scores


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


def build_method(cfg: DictConfig, ctx: Context) -> Method:
    """The method of a method config (`kind` when several configs share one class)."""
    from mucs_pipeline.attribution.ascent import AbU, ForwardINF
    from mucs_pipeline.attribution.dtrak import DAS, DTRAK
    from mucs_pipeline.attribution.ensemble import Ensemble
    from mucs_pipeline.attribution.mucs import MUCS
    from mucs_pipeline.attribution.random import Random
    from mucs_pipeline.attribution.similarity import CLIP, DINO, Condition, Pixel

    classes = (MUCS, Random, Pixel, Condition, CLIP, DINO, DTRAK, DAS, ForwardINF, AbU, Ensemble)
    methods = {m.name: m for m in classes}
    kind = cfg.get("kind", cfg.name)
    if kind not in methods:
        raise ValueError(f"method.name={kind!r}: expected one of {sorted(methods)}")
    return methods[kind](cfg, ctx)
