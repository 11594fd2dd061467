"""LDS: train the subset models, `lds.models_per_pass` per unit and together in one pass
(mucs_pipeline.stacked), each with the pretraining recipe on its subset; resumable."""

from __future__ import annotations

import shutil

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import lds_units
from mucs_pipeline.evaluation.lds import draw_subsets
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stacked import train_stacked
from mucs_pipeline.stages import common


def train_unit(cfg: DictConfig, layout: Layout, unit: str, folder) -> dict:
    data = common.dataset(cfg)
    pairs = lds_units.unit_models(cfg, unit)
    c = cfg.lds  # the subsets the lds_subsets stage records (subset s: its own stream)
    members = draw_subsets(len(data), pairs[-1][0] + 1, c.alpha, cfg.seed, c.split)
    (folder / "checkpoints").mkdir(exist_ok=True)
    states, history = train_stacked(
        cfg,
        data,
        common.diffusion(cfg),
        [members[s].nonzero().flatten() for s, _ in pairs],
        [lds_units.stream(cfg, s, r) for s, r in pairs],
        lds_units.steps(cfg),
        checkpoint=folder / "checkpoints" / "last.pt",
        device=common.device(cfg),
        label=f"lds_train {unit}",
    )
    io.atomic_save({"models": pairs, "ema": states}, folder / "models.pt")
    # The resumable state (optimizer moments of every model) has served: at DiT/B size it
    # is gigabytes per unit.
    shutil.rmtree(folder / "checkpoints")
    rows = ["step," + ",".join(f"subset{s}_replicate{r}" for s, r in pairs)]
    rows += [f"{h['step']}," + ",".join(f"{v:.6g}" for v in h["loss"]) for h in history]
    io.atomic_write_text(folder / "losses.csv", "\n".join(rows) + "\n")
    final = history[-1]["loss"] if history else []
    return {"num_models": len(pairs), "steps": lds_units.steps(cfg),
            "final_loss_mean": sum(final) / len(final) if final else None}  # fmt: skip


def run(cfg: DictConfig, layout: Layout) -> dict:
    return {
        u: run_unit(layout, "lds_train", u, lambda folder, u=u: train_unit(cfg, layout, u, folder))
        for u in layout.units("lds_train")
    }
