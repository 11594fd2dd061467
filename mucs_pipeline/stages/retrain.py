"""Retrain from scratch without the union of the m top-k sets, once per method (and random)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.evaluation.protocol import removal_set, top_k
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common
from mucs_pipeline.training import train


def retrain(cfg: DictConfig, layout: Layout, method: str, folder) -> dict:
    data = common.dataset(cfg)
    scores = io.load(layout.require("attribute", method) / "scores.pt")["scores"]
    removed = removal_set(scores, top_k(len(data), cfg.evaluate.k_fraction), cfg.seed)
    if len(removed) >= len(data):
        raise ValueError(
            f"evaluate.k_fraction={cfg.evaluate.k_fraction} removes the whole training set; "
            "lower it"
        )
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[removed] = False
    if cfg.retrain.common_random_numbers:
        # Replay pretraining's random stream; removed items get zero loss weight.
        net = train(
            cfg, data, common.diffusion(cfg), folder, cfg.retrain.steps, weights=keep.float(),
            job_type="retrain", method=method,
        )  # fmt: skip
    else:
        net = train(
            cfg, data.subset(keep), common.diffusion(cfg), folder, cfg.retrain.steps,
            job_type="retrain", method=method,
        )  # fmt: skip
    io.atomic_save(removed, folder / "removed.pt")
    io.atomic_save(net.state_dict(), folder / "ema.pt")
    return {"num_removed": len(removed), "fraction_removed": len(removed) / len(data)}


def run(cfg: DictConfig, layout: Layout) -> dict:
    return {
        m: run_unit(
            layout,
            "retrain",
            m,
            lambda folder, m=m: retrain(cfg, layout, m, folder),
            distributed=True,
        )
        for m in layout.units("retrain")
    }
