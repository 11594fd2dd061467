"""Regenerate the same seeds and conditions through each retrained model."""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common
from mucs_pipeline.stages.generate import generate_items


def regenerate(cfg: DictConfig, layout: Layout, method: str, folder) -> dict:
    data = common.dataset(cfg)
    net = common.load_net(cfg, data, layout.require("retrain", method) / "ema.pt")
    io.atomic_save(generate_items(cfg, net, data), folder / "items.pt")
    return {}


def run(cfg: DictConfig, layout: Layout) -> dict:
    return {
        m: run_unit(layout, "regenerate", m, lambda folder, m=m: regenerate(cfg, layout, m, folder))
        for m in layout.units("regenerate")
    }
