"""LDS: the S random subsets of the training set, at fraction alpha, drawn from `seed`."""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.evaluation.lds import draw_subsets
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        data = common.dataset(cfg)
        c = cfg.lds
        members = draw_subsets(len(data), c.num_subsets, c.alpha, cfg.seed, c.split)
        io.atomic_save({"members": members, "alpha": c.alpha, "split": c.split,
                        "train_index": data.source_index()}, folder / "subsets.pt")  # fmt: skip
        return {"num_subsets": len(members), "subset_size": int(members[0].sum())}

    return {u: run_unit(layout, "lds_subsets", u, work) for u in layout.units("lds_subsets")}
