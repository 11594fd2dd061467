"""Pretrain F1 (resumable Lightning checkpoint; the EMA weights are F1), or take it from
`pretrain.init_from`."""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.layout import Layout
from mucs_pipeline.stages import common
from mucs_pipeline.training import train
from mucs_pipeline.weights import fingerprint, init_from, load_init


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        data = common.dataset(cfg)
        if init_from(cfg) is not None:  # F1 given: its weights, as they are
            net = load_init(cfg, data)
            io.atomic_save(net.state_dict(), folder / "ema.pt")
            return {"init_from": str(init_from(cfg)), "sha256": fingerprint(cfg),
                    "num_params": sum(p.numel() for p in net.parameters())}  # fmt: skip
        net = train(cfg, data, common.diffusion(cfg), folder, cfg.pretrain.steps)
        io.atomic_save(net.state_dict(), folder / "ema.pt")
        return {
            "steps": cfg.pretrain.steps,
            "num_params": sum(p.numel() for p in net.parameters()),
            "train_items": len(data),
        }

    return layout.run_unit("pretrain", None, work, distributed=True)
