"""LDS's held-out queries scored by every method, as the attribute stage scores the
generated items (lds.queries=heldout or both)."""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline.layout import Layout
from mucs_pipeline.stages import attribute


def run(cfg: DictConfig, layout: Layout) -> dict:
    return attribute.run(cfg, layout, stage="lds_attribute", items="lds_heldout")
