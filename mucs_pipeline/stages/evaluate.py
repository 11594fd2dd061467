"""Compare original and regenerated items: similarities, AUC and U test against random removal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io
from mucs_pipeline.attribution.base import method_class
from mucs_pipeline.constants import BASELINE
from mucs_pipeline.evaluation import diagnostics
from mucs_pipeline.evaluation.figures import save_grid, similarity_distributions
from mucs_pipeline.evaluation.metrics import similarities
from mucs_pipeline.evaluation.protocol import COLUMNS, result_rows, top_k, write_results
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common, null_loss

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, layout: Layout, folder: Path) -> dict:
    original = io.load(layout.require("generate") / "items.pt")
    regen = {m: io.load(layout.require("regenerate", m) / "items.pt") for m in layout.methods}
    sims = {}
    for subset in ("target", "control"):
        ref = original[subset]["images"]
        if len(ref):
            device = common.device(cfg)
            sims[subset] = {
                m: similarities(ref, regen[m][subset]["images"], cfg.metric, device)
                for m in layout.methods
            }
            io.atomic_save(sims[subset], folder / f"similarities_{subset}.pt")
    removed = {m: layout.manifest("retrain", m)["metrics"]["num_removed"] for m in layout.methods}
    data = common.dataset(cfg)
    # Metrics skipped for missing weights (metric.skip_unavailable) are absent from sims.
    names = [n for n in cfg.metric.names if n in sims["target"][cfg.method.name]]
    rows = result_rows(cfg.method.name, sims, names, cfg.evaluate.alpha, removed)
    diags = setup_diagnostics(cfg, layout, data, original["target"], rows)
    runs = f"{cfg.name}, {cfg.method.name}, seed {cfg.seed}"
    write_results(
        rows, folder, runs, cfg.evaluate.alpha, notes=diagnostics.markdown({cfg.seed: diags})
    )
    run_info = {
        "name": cfg.name,
        "seed": cfg.seed,
        "method": cfg.method.name,
        "experiment_key": layout.experiment_key(),
        "comparison_key": layout.comparison_key(),
        # The report's row: the method, or mucs/<name> for a Table 2 ablation (+ablation=...).
        "label": cfg.method.name + (f"/{cfg.ablation.name}" if cfg.get("ablation") else ""),
        "ablation": OmegaConf.to_container(cfg.ablation) if cfg.get("ablation") else None,
        "removed": removed,
        "k": top_k(len(data), cfg.evaluate.k_fraction),
        # Where this run's artifacts are, for the report's tables and figures: relative to
        # the runs folder, so that the report works wherever it is moved or copied.
        "folder": layout.relative(folder),
        "attribute": {m: layout.relative(layout.require("attribute", m)) for m in layout.methods},
        "regenerate": {m: layout.relative(layout.require("regenerate", m)) for m in layout.methods},
        "generate": layout.relative(layout.require("generate")),
        "method_cfg": OmegaConf.to_container(cfg.method, resolve=True),
        "bf16_scores": layout.bf16_scores(cfg.method.name),  # another setting, like method_cfg's
        "dataset_cfg": OmegaConf.to_container(cfg.dataset, resolve=True),
        "diagnostics": diags,
    }
    io.atomic_write_text(folder / "run.json", json.dumps(run_info, indent=2))
    regenerations_figure(original, regen, sims["target"], names[0], folder / "regenerations.png")
    for metric in names:
        similarity_distributions(
            sims["target"], BASELINE, metric, folder / f"similarity_{metric}.png"
        )
    log_wandb(cfg, layout, rows, diags, folder)
    return {f"{r['subset']}/{r['metric']}/{k}": r[k] for r in rows for k in ("auc", "p_value")}


def setup_diagnostics(cfg: DictConfig, layout: Layout, data, items: dict, rows: list[dict]):
    """evaluation.diagnostics of this run: F1's fit (its loss on L_null's draws, which the
    pretrain unit records, and how near its generations are to training images) and the
    unlearnings that hit their cap, as each method counts them."""
    training_loss = layout.manifest("pretrain")["metrics"].get("training_loss")
    # An F1 pretrained before the pretrain unit recorded its fit: that diagnostic is absent.
    fit = None if training_loss is None else training_loss / null_loss.read(layout)
    near = diagnostics.nearest_share(items["images"], data.x, cfg.seed)
    capped = {}
    for m in layout.methods:
        scores = io.load(layout.require("attribute", m) / "scores.pt")
        n = method_class(layout.method_cfg(m)).items_at_cap(scores)
        if n is not None:
            capped[m] = n
    return diagnostics.diagnostics(rows, fit, near, capped, len(items["images"]))


def regenerations_figure(original: dict, regen: dict, sims: dict, metric: str, path: Path):
    """Rows original, the method, random (same seeds); captions: item id and similarity."""
    methods = list(regen)
    n = len(original["target"]["images"])
    captions = [[f"item {i}" for i in range(n)]]
    captions += [[f"{metric} {v:.3f}" for v in sims[m][metric].tolist()] for m in methods]
    save_grid(
        [original["target"]["images"]] + [regen[m]["target"]["images"] for m in methods],
        path,
        ["original", *[f"after removing\n{m}'s top-k" for m in methods]],
        captions,
        title=f"Regenerated with the same seeds after each removal ({metric} to the original)",
    )


def log_wandb(cfg: DictConfig, layout: Layout, rows: list[dict], diags: list, folder: Path) -> None:
    """The evaluate stage's W&B run: AUCs and p as summary numbers, the results table
    (numeric columns), the regenerations and the similarity histograms."""
    from mucs_pipeline import tracking

    run = tracking.init(cfg, "evaluate", cfg.method.name, folder)
    if run is None:
        return
    import wandb

    for r in rows:
        for k in ("auc", "p_value", "diff_pct", "diff_ci", "items_needed"):
            run.summary[f"{r['subset']}/{r['metric']}/{k}"] = r[k]
    for d in diags:
        run.summary[f"diagnostics/{d['diagnostic']}"] = d["value"]
    run.log({"results": wandb.Table(columns=COLUMNS, data=[[r[c] for c in COLUMNS] for r in rows])})
    run.log({"regenerations": wandb.Image(str(folder / "regenerations.png"))})
    for path in sorted(folder.glob("similarity_*.png")):
        run.log({path.stem: wandb.Image(str(path))})
    run.finish()


def run(cfg: DictConfig, layout: Layout) -> dict:
    return run_unit(layout, "evaluate", None, lambda folder: evaluate(cfg, layout, folder))


def read_results(layout: Layout) -> str:
    return (layout.require("evaluate") / "results.md").read_text()
