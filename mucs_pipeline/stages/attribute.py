"""Attribute every generated item with the selected method and with random attribution."""

from __future__ import annotations

import logging
import time

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import distributed as dist
from mucs_pipeline.attribution import Context, build_method
from mucs_pipeline.layout import Layout
from mucs_pipeline.stages import common, null_loss
from mucs_pipeline.terminal import Progress

log = logging.getLogger(__name__)


def attribute(cfg: DictConfig, layout: Layout, method: str, folder) -> dict:
    data = common.dataset(cfg)
    items = io.load(layout.require("generate") / "items.pt")["target"]
    setup_start = time.perf_counter()
    ctx = Context(
        cfg=cfg,
        data=data,
        diffusion=common.diffusion(cfg),
        net=common.load_net(cfg, data, layout.require("pretrain") / "ema.pt"),
        loss_null=null_loss.read(layout),
        device=common.device(cfg),
        # Keyed by F1's content, so a recomputed F1 never meets a stale cache.
        cache_dir=layout.root / "cache" / layout.manifest("pretrain")["outputs"]["ema.pt"][:16],
        components={
            c: io.load(layout.require("attribute", c) / "scores.pt")["scores"]
            for c in layout.components(method)
        },
    )
    if items["images"].shape[1:] != data.x.shape[1:]:
        raise ValueError(
            f"generated items of shape {tuple(items['images'].shape[1:])} do not match the "
            f"training images {tuple(data.x.shape[1:])}: was generate run with another dataset?"
        )
    parts = folder / "items"
    parts.mkdir(exist_ok=True)
    m = len(items["seeds"])
    # Finished items are kept after a kill; a damaged one is computed again.
    strict = cfg.get("strict", False)
    todo = [i for i in range(m) if not io.resumable(parts / f"item{i:04d}.pt", strict)]
    mc = layout.method_cfg(method)
    scorer = build_method(mc, ctx)
    if todo:
        scorer.prepare(items["images"], items["cond"])
    setup_seconds = time.perf_counter() - setup_start  # caches shared by all items, prepare()
    k = scorer.items_per_pass
    bar = Progress(len(todo), f"attribute {method}", cfg.trainer.progress_bar)
    for group in [todo[g : g + k] for g in range(0, len(todo), k)]:
        conds = [None if items["cond"] is None else items["cond"][i : i + 1] for i in group]
        start = time.perf_counter()
        results = scorer.score_many(group, [items["images"][i] for i in group], conds)
        seconds = (time.perf_counter() - start) / len(group)  # a shared pass, split evenly
        for i, (scores, info) in zip(group, results, strict=True):
            part = parts / f"item{i:04d}.pt"
            io.atomic_save({"scores": scores.float(), "seconds": seconds, **info}, part)
        bar.update(len(group))
    bar.close()
    if not dist.is_main():
        return {}  # rank 0 assembles and writes the scores
    results = [io.load(parts / f"item{i:04d}.pt") for i in range(m)]
    out = {
        "scores": torch.stack([r["scores"] for r in results]),  # (m, |Z|)
        "seconds": torch.tensor([r["seconds"] for r in results]),  # (m,) per-item wall time
        "setup_seconds": setup_seconds,  # shared work; amortised cost = setup / m + seconds
    }
    if "steps" in results[0]:
        out["steps"] = torch.tensor([r["steps"] for r in results])
        out["hit_max_steps"] = torch.tensor([r["hit_max_steps"] for r in results])
        out["trajectories"] = [r["trajectory"] for r in results]
        out["loss_null"] = ctx.loss_null  # the trajectories' reference line
    io.atomic_save(out, folder / "scores.pt")
    metrics = {
        "seconds_per_item": out["seconds"].mean().item(),
        "setup_seconds": setup_seconds,
        "amortised_seconds_per_item": out["seconds"].mean().item() + setup_seconds / m,
    }
    if "steps" in out:
        metrics["unlearn_steps_mean"] = out["steps"].float().mean().item()
        metrics["hit_max_steps"] = int(out["hit_max_steps"].sum())
        if metrics["hit_max_steps"]:  # one line for the unit, not one per item
            log.warning(
                "%s: %d of %d items hit method.max_steps=%d before L_GA >= %g * L_null "
                "(recorded as hit_max_steps; see trajectories.png)",
                method, metrics["hit_max_steps"], m, mc.max_steps, mc.stop_ratio,
            )  # fmt: skip
    figures(cfg, mc, data, items, out, folder)
    log_wandb(cfg, layout, method, items, out, metrics, folder)
    return metrics


def figures(cfg: DictConfig, method_cfg: DictConfig, data, items: dict, out: dict, folder):
    """top_k.png (each generated item next to its most influential training items) and,
    for MUCS, trajectories.png (unlearning losses against L_null and the stop line)."""
    from mucs_pipeline.evaluation import figures as fig
    from mucs_pipeline.evaluation.protocol import top_k_indices

    n_items, n_top = min(8, len(items["images"])), min(8, out["scores"].shape[1])
    top = top_k_indices(out["scores"][:n_items], n_top, cfg.seed)
    fig.save_grid(
        [torch.cat([items["images"][i : i + 1], data.x[top[i]]]) for i in range(n_items)],
        folder / "top_k.png",
        [f"item {i}" for i in range(n_items)],
        [["generated", *[f"#{r + 1}: z{int(j)}" for r, j in enumerate(t)]] for t in top],
        title=f"{method_cfg.name}: each generated item and its top-{n_top} training items",
    )  # fmt: skip
    if "trajectories" in out:
        fig.trajectories(
            out["trajectories"], out["loss_null"], folder / "trajectories.png",
            method_cfg.get("stop_ratio", 0.95),
        )  # fmt: skip


def log_wandb(cfg, layout: Layout, method: str, items: dict, out: dict, metrics: dict, folder):
    """The attribute unit's W&B run: per-item unlearning curves (x = unlearning step), steps,
    cap hits and seconds as a table, the top-k grid and the trajectories figure."""
    from mucs_pipeline import tracking

    run = tracking.init(cfg, layout, "attribute", method, folder)
    if run is None:
        return
    import wandb

    run.summary.update(metrics)
    columns = ["item", "seed", "seconds"]
    data = [
        [i, int(items["seeds"][i]), float(out["seconds"][i])] for i in range(len(out["seconds"]))
    ]
    if "trajectories" in out:
        loss_null = out["loss_null"]
        run.summary["loss_null"] = loss_null
        run.define_metric("unlearn/step")
        run.define_metric("unlearn/*", step_metric="unlearn/step")
        for i, curve in enumerate(out["trajectories"]):
            for step, (l_ft, l_ga) in enumerate(curve.tolist()):
                run.log({"unlearn/step": step, f"unlearn/item{i}/L_FT": l_ft,
                         f"unlearn/item{i}/L_GA": l_ga, "unlearn/L_null": loss_null})  # fmt: skip
        columns += ["steps", "hit_max_steps", "final_L_GA", "final_L_GA / L_null"]
        for i, row in enumerate(data):
            final = float(out["trajectories"][i][-1, 1])
            row += [int(out["steps"][i]), bool(out["hit_max_steps"][i]), final, final / loss_null]
        run.log({"trajectories": wandb.Image(str(folder / "trajectories.png"))})
    run.log({"items": wandb.Table(columns=columns, data=data)})
    run.log({"top_k": wandb.Image(str(folder / "top_k.png"))})
    run.finish()


def run(cfg: DictConfig, layout: Layout) -> dict:
    return {
        m: layout.run_unit(
            "attribute",
            m,
            lambda folder, m=m: attribute(cfg, layout, m, folder),
            distributed=True,  # scoring grids are split across the ranks
        )
        for m in layout.units("attribute")
    }
