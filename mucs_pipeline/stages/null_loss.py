"""Estimate L_null (Eq. 1): the mean loss of a freshly initialised model on training draws."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import rng
from mucs_pipeline.layout import Layout
from mucs_pipeline.stages import common
from mucs_pipeline.training import init_model, training_losses


@torch.inference_mode()
def estimate_loss_null(cfg: DictConfig, data, diffusion) -> float:
    """Mean L over num_batches x batch_size draws of (z, sigma, n); z without replacement."""
    net = init_model(cfg, data, cfg.seed).eval()
    total, count = 0.0, 0
    b = min(cfg.null_loss.batch_size, len(data))
    for i in range(cfg.null_loss.num_batches):
        gen = rng.generator("null-loss", cfg.seed, i)
        idx = torch.randperm(len(data), generator=gen)[:b]
        total += training_losses(net, diffusion, data, idx, gen, torch.device("cpu")).sum().item()
        count += b
    return total / count


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        loss_null = estimate_loss_null(cfg, common.dataset(cfg), common.diffusion(cfg))
        io.atomic_write_text(folder / "loss_null.txt", f"{loss_null!r}\n")
        return {"loss_null": loss_null}

    return layout.run_unit("null_loss", None, work)


def read(layout: Layout) -> float:
    return float((layout.require("null_loss") / "loss_null.txt").read_text())
