"""Attribute every generated item with the selected method and with random attribution
(and, with lds=on and held-out queries, LDS's held-out images: stage lds_attribute)."""

from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import distributed as dist
from mucs_pipeline.attribution import Context, build_method
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common, null_loss
from mucs_pipeline.terminal import Progress


def attribute(
    cfg: DictConfig,
    layout: Layout,
    method: str,
    folder,
    stage: str = "attribute",
    items_stage: str = "generate",
) -> dict:
    """Score the items of `items_stage` with `method` (a unit of `stage`)."""
    data = common.dataset(cfg)
    items = io.load(layout.require(items_stage) / "items.pt")["target"]
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
            c: io.load(layout.require(stage, c) / "scores.pt")["scores"]
            for c in layout.components(method)
        },
    )
    if items["images"].shape[1:] != data.x.shape[1:]:
        raise ValueError(
            f"{items_stage} items of shape {tuple(items['images'].shape[1:])} do not match the "
            f"training images {tuple(data.x.shape[1:])}: was it run with another dataset?"
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
    out.update(scorer.record(results))  # what the method records beside its scores
    io.atomic_save(out, folder / "scores.pt")
    metrics = {
        "seconds_per_item": out["seconds"].mean().item(),
        "setup_seconds": setup_seconds,
        "amortised_seconds_per_item": out["seconds"].mean().item() + setup_seconds / m,
    }
    metrics.update(scorer.summary(mc, out))
    paths = [top_k_figure(cfg, mc, data, items, out, folder), *scorer.figures(mc, out, folder)]
    log_wandb(cfg, layout, method, scorer, items, out, metrics, paths, stage)
    return metrics


def top_k_figure(cfg: DictConfig, method_cfg: DictConfig, data, items: dict, out: dict, folder):
    """top_k.png: each generated (or query) item next to its most influential training items."""
    from mucs_pipeline.evaluation import figures as fig
    from mucs_pipeline.evaluation.protocol import top_k_indices

    kind = "query" if "names" in items else "generated"  # query mode's items have file names
    n_items, n_top = min(8, len(items["images"])), min(8, out["scores"].shape[1])
    top = top_k_indices(out["scores"][:n_items], n_top, cfg.seed)
    path = folder / "top_k.png"
    title = f"{method_cfg.name}: each {kind} item and its top-{n_top} training items"
    fig.save_top_k(items["images"][:n_items], data.x, top, path, kind, title)
    return path


def log_wandb(cfg, layout: Layout, method: str, scorer, items, out, metrics, figures, stage):
    """The attribute unit's W&B run: the unit's numbers, a table of the items (seed,
    seconds and the method's own columns), the method's curves and the figures."""
    from mucs_pipeline import tracking

    run = tracking.init(cfg, stage, method, layout.dir(stage, method))
    if run is None:
        return
    import wandb

    run.summary.update(metrics)
    table = {
        "item": list(range(len(out["seconds"]))),
        "seed": [int(s) for s in items["seeds"]],
        "seconds": [float(s) for s in out["seconds"]],
        **scorer.log_wandb(run, out),
    }
    rows = [list(row) for row in zip(*table.values(), strict=True)]
    run.log({"items": wandb.Table(columns=list(table), data=rows)})
    for path in figures:
        run.log({path.stem: wandb.Image(str(path))})
    run.finish()


def run(cfg: DictConfig, layout: Layout, stage: str = "attribute", items: str = "generate"):
    return {
        m: run_unit(
            layout,
            stage,
            m,
            lambda folder, m=m: attribute(cfg, layout, m, folder, stage, items),
            distributed=True,  # scoring grids are split across the ranks
        )
        for m in layout.units(stage)
    }
