"""Estimate L_null (Eq. 1): the mean loss of a freshly initialised model on training draws."""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common
from mucs_pipeline.training import init_model, mean_training_loss


def estimate_loss_null(cfg: DictConfig, data, diffusion) -> float:
    """Mean L of a freshly initialised network over L_null's draws."""
    return mean_training_loss(cfg, init_model(cfg, data, cfg.seed).eval(), data, diffusion)


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        loss_null = estimate_loss_null(cfg, common.dataset(cfg), common.diffusion(cfg))
        io.atomic_write_text(folder / "loss_null.txt", f"{loss_null!r}\n")
        return {"loss_null": loss_null}

    return run_unit(layout, "null_loss", None, work)


def read(layout: Layout) -> float:
    return float((layout.require("null_loss") / "loss_null.txt").read_text())
