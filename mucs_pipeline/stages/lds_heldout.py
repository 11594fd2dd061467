"""LDS's held-out queries (lds.queries=heldout or both): a seeded draw of lds.num_heldout
images of the dataset's held-out split, stored as the generate stage stores its items."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import rng
from mucs_pipeline.data import build_dataset
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit


def heldout_items(cfg: DictConfig) -> dict:
    """{"target": images, cond, labels, seeds (each image's index in the held-out split)};
    split=tune takes the other end of the same seeded order, disjoint from eval's."""
    held = build_dataset(cfg.dataset, split="test")
    count = cfg.lds.num_heldout
    if count > len(held) // (2 if cfg.lds.split == "tune" else 1):
        raise ValueError(
            f"lds.num_heldout={count}: the held-out split has {len(held)} images"
            + (
                " (split=tune takes them from the other end: at most half)"
                if cfg.lds.split == "tune"
                else ""
            )  # fmt: skip
        )
    order = torch.randperm(len(held), generator=rng.generator("lds-heldout", cfg.seed))
    if cfg.lds.split == "tune":
        order = order.flip(0)
    pick = order[:count]
    return {
        "target": {
            "images": held.x[pick],
            "cond": None if held.cond is None else held.cond[pick],
            "labels": None if held.labels is None else held.labels[pick],
            "seeds": pick,
        }
    }


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        items = heldout_items(cfg)
        io.atomic_save(items, folder / "items.pt")
        return {"num_items": len(items["target"]["seeds"])}

    return {u: run_unit(layout, "lds_heldout", u, work) for u in layout.units("lds_heldout")}
