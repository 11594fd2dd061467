"""Pretrain F1 (resumable Lightning checkpoint; the EMA weights are F1), or take it from
`pretrain.init_from`; record F1's fit (its loss on L_null's draws) while it is loaded."""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.keys import fingerprint, init_from
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common
from mucs_pipeline.training import mean_training_loss, train
from mucs_pipeline.weights import load_init


def fit(cfg: DictConfig, net, data) -> float:
    """F1's mean loss on L_null's draws: the evaluate stage's fit diagnostic (its ratio to
    L_null), computed here, once, while F1 is loaded."""
    return mean_training_loss(cfg, net.eval(), data, common.diffusion(cfg))


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        data = common.dataset(cfg)
        if init_from(cfg) is not None:  # F1 given: its weights, as they are
            net = load_init(cfg, data)
            io.atomic_save(net.state_dict(), folder / "ema.pt")
            return {"init_from": str(init_from(cfg)), "sha256": fingerprint(cfg),
                    "num_params": sum(p.numel() for p in net.parameters()),
                    "training_loss": fit(cfg, net, data)}  # fmt: skip
        net = train(cfg, data, common.diffusion(cfg), folder, cfg.pretrain.steps)
        io.atomic_save(net.state_dict(), folder / "ema.pt")
        return {
            "steps": cfg.pretrain.steps,
            "num_params": sum(p.numel() for p in net.parameters()),
            "train_items": len(data),
            "training_loss": fit(cfg, net, data),
        }

    return run_unit(layout, "pretrain", None, work, distributed=True)
