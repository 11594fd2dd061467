"""Generate the m attributed items and the control items from their seeds with F1."""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.evaluation.figures import save_grid
from mucs_pipeline.generation import generate, item_plan
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common


def generate_items(cfg: DictConfig, net, data) -> dict:
    """Images of every planned item (targets and controls) from `net`."""
    shape = tuple(data.x.shape[1:])
    out = {}
    for subset, plan in item_plan(cfg, data).items():
        images = generate(
            net,
            common.diffusion(cfg),
            plan["seeds"],
            plan["cond"],
            shape,
            cfg.generate,
            common.device(cfg),
            desc=f"generate {subset}",
        )
        out[subset] = {**plan, "images": images}
    return out


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        data = common.dataset(cfg)
        net = common.load_net(cfg, data, layout.require("pretrain") / "ema.pt")
        items = generate_items(cfg, net, data)
        io.atomic_save(items, folder / "items.pt")
        target = items["target"]
        labels = target.get("labels")
        captions = [
            f"item {i}" + ("" if labels is None else f", class {int(labels[i])}")
            for i in range(len(target["seeds"]))
        ]
        save_grid(
            [target["images"]], folder / "items.png", ["generated"], [captions],
            title=f"the {len(captions)} attributed items (seed {cfg.seed})",
        )  # fmt: skip
        return {
            "num_items": len(items["target"]["seeds"]),
            "num_controls": len(items["control"]["seeds"]),
        }

    return run_unit(layout, "generate", None, work)
