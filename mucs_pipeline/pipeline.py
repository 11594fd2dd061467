"""Run the configured stages in order; each skips itself when its manifest matches."""

from __future__ import annotations

import importlib
import logging
import time

import torch
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import distributed as dist
from mucs_pipeline import terminal
from mucs_pipeline.config import prepare
from mucs_pipeline.graph import STAGES
from mucs_pipeline.layout import Layout

log = logging.getLogger(__name__)


def run(cfg: DictConfig, overrides=()) -> dict:
    """Every configured stage of `cfg` (prepared here unless it is already; `overrides`:
    the command line's, see config.prepare)."""
    start = time.perf_counter()
    cfg = prepare(cfg, overrides)  # before anything is computed or written
    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return {"config": cfg}
    terminal.warnings_once()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    import lightning  # noqa: F401  (imported first: it sets its loggers to INFO on import)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    dist.setup(cfg)  # several processes (torchrun, SLURM tasks): join their group
    if cfg.get("query") is not None:  # +query=folder: the user's images, no retraining
        from mucs_pipeline.query.run import run as run_queries

        return {"query": run_queries(cfg)}
    layout = Layout(cfg)
    if cfg.plan:
        from mucs_pipeline import plan
        from mucs_pipeline.stages import common  # after the loggers: it imports Lightning

        data = common.dataset(cfg)  # read by config.prepare: cached
        rate = plan.measure(cfg, data)  # a few timed batches of the configured network
        rows = plan.units(cfg, layout, len(data), data.cond is not None, rate)
        print(
            f"Plan for {layout.root} (plan=true: nothing is computed):\n{plan.render(rows, rate)}"
        )
        return {"plan": rows, "rate": rate}
    log.info("run folder %s (methods: %s)", layout.root, ", ".join(layout.methods))
    metrics = {}
    for stage in STAGES:
        if stage in cfg.stages:
            module = importlib.import_module(f"mucs_pipeline.stages.{stage}")
            metrics[stage] = module.run(cfg, layout)
    if "evaluate" in cfg.stages and dist.is_main():
        from mucs_pipeline.stages.evaluate import read_results

        print(
            f"\nLeave-k-out results, {cfg.method.name} vs random removal "
            f"({layout.dir('evaluate')}/results.csv):\n{read_results(layout)}"
        )
    if "lds" in cfg.stages and layout.units("lds") and dist.is_main():
        from mucs_pipeline.stages.lds import summary

        print(f"\n{summary(cfg, layout)}")
    if dist.is_main():
        print(f"done in {terminal.duration(time.perf_counter() - start)} ({layout.root})")
    return metrics
