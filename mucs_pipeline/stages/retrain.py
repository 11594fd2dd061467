"""Retrain from scratch without the union of the m top-k sets, once per method (and random)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import rng
from mucs_pipeline.layout import Layout
from mucs_pipeline.stages import common
from mucs_pipeline.training import train


def top_k(num_items: int, k_fraction: float) -> int:
    return max(1, round(k_fraction * num_items))


def top_k_indices(scores: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(m, k) indices of each generated item's k highest-scored training items.

    Ties (Condition's one-hot cosines are all 0 or 1) are broken in a seeded random order,
    not by index, so that a tied top-k is a random draw from the tied items.
    """
    order = torch.randperm(scores.shape[1], generator=rng.generator("tie-break", seed))
    ranked = torch.sort(scores[:, order], dim=1, descending=True, stable=True).indices
    return order[ranked[:, :k]]


def removal_set(scores: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Sorted union over generated items of each item's k highest-scored training items."""
    return top_k_indices(scores, k, seed).flatten().unique()


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
        m: layout.run_unit(
            "retrain", m, lambda folder, m=m: retrain(cfg, layout, m, folder), distributed=True
        )
        for m in layout.units("retrain")
    }
