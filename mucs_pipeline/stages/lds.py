"""LDS of each evaluated method (random included): per query set, the Spearman correlation
across subsets of predicted and measured losses, averaged over queries, with a bootstrap
CI over subset models; with two or more replicates, the two-seed agreement and the
ceiling it sets for LDS against the replicates' mean."""

from __future__ import annotations

import json

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io
from mucs_pipeline.evaluation import figures
from mucs_pipeline.evaluation.lds import ceiling, ceiling_of_mean, lds, predictions
from mucs_pipeline.graph import LDS_SCORES, lds_queries
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit


def gather_outputs(cfg: DictConfig, layout: Layout) -> dict[str, torch.Tensor]:
    """{query set: (S, R, m) losses} from every lds_outputs unit."""
    out = {}
    for unit in layout.units("lds_outputs"):
        saved = io.load(layout.require("lds_outputs", unit) / "outputs.pt")
        for q, losses in saved["outputs"].items():
            if q not in out:
                shape = (cfg.lds.num_subsets, cfg.lds.replicates, losses.shape[1])
                out[q] = torch.full(shape, float("nan"))
            for (s, r), row in zip(saved["models"], losses, strict=True):
                out[q][s, r] = row
    return out


def measure(cfg: DictConfig, layout: Layout, method: str, folder) -> dict:
    members = io.load(layout.require("lds_subsets") / "subsets.pt")["members"]
    outputs = gather_outputs(cfg, layout)
    c = cfg.lds
    results, per_query = {}, {}
    for q, _ in lds_queries(layout):
        stage = LDS_SCORES[q]
        scores = io.load(layout.require(stage, method) / "scores.pt")["scores"]
        out = outputs[q].double()  # (S, R, m)
        if scores.shape != (out.shape[2], members.shape[1]):
            raise ValueError(
                f"{method}'s {q} scores have shape {tuple(scores.shape)}; LDS needs one score "
                f"per query and training item, {(out.shape[2], members.shape[1])}"
            )
        mean_out = out.mean(1).numpy()  # replicates averaged, as D-TRAK averages its seeds
        res = lds(scores, members, mean_out, c.confidence, c.resamples, cfg.seed)
        agreement = ceiling(out[:, 0].numpy(), out[:, 1].numpy()) if c.replicates > 1 else None
        res["replicate_agreement"] = agreement  # replicates 0 and 1 of every subset
        res["ceiling"] = None if agreement is None else ceiling_of_mean(agreement, c.replicates)
        res["num_queries_used"] = int(np.isfinite(res["per_query"]).sum())  # a correlation
        results[q] = {k: v for k, v in res.items() if k != "per_query"}
        results[q]["num_queries"] = int(out.shape[2])
        results[q]["num_subsets"] = int(out.shape[0])
        pred, rho = predictions(scores, members), res["per_query"]
        per_query[q] = {
            "spearman": torch.from_numpy(rho),
            "predicted": torch.from_numpy(pred),
            "measured": torch.from_numpy(mean_out),
        }
        # The scatter of the query whose correlation is nearest the mean: a typical one.
        j = int(np.nanargmin(np.abs(rho - res["lds"]))) if np.isfinite(rho).any() else 0
        figures.lds_scatter(pred[:, j], mean_out[:, j], float(rho[j]),
                            f"{method}, {q} query {j}", folder / f"scatter_{q}.png")  # fmt: skip
    io.atomic_save(per_query, folder / "per_query.pt")
    record = {
        "name": cfg.name,
        "seed": cfg.seed,
        "method": method,
        "method_cfg": OmegaConf.to_container(layout.method_cfg(method), resolve=True),
        # the scores' units, by folder name: what the report matches leave-k-out runs by
        "attribute": {q: layout.dir(LDS_SCORES[q], method).name for q in results},
        "queries": results,
    }
    io.atomic_write_text(folder / "lds.json", json.dumps(record, indent=2))
    log_wandb(cfg, layout, method, results, per_query, folder)
    return results


def log_wandb(cfg, layout: Layout, method: str, results: dict, per_query: dict, folder) -> None:
    """The lds unit's W&B run: LDS, CI and ceiling per query set in the summary, a table of
    every query's Spearman correlation, the scatter figures."""
    from mucs_pipeline import tracking

    run = tracking.init(cfg, "lds", method, folder)
    if run is None:
        return
    import wandb

    run.summary.update({f"{q}/{k}": v for q, r in results.items() for k, v in r.items()})
    for q, values in per_query.items():
        rows = [[i, float(v)] for i, v in enumerate(values["spearman"])]
        run.log({f"spearman_{q}": wandb.Table(columns=["query", "spearman"], data=rows)})
    for path in sorted(folder.glob("scatter_*.png")):
        run.log({path.stem: wandb.Image(str(path))})
    run.finish()


def run(cfg: DictConfig, layout: Layout) -> dict:
    return {
        m: run_unit(layout, "lds", m, lambda folder, m=m: measure(cfg, layout, m, folder))
        for m in layout.units("lds")
    }


def summary(cfg: DictConfig, layout: Layout) -> str:
    """The run's LDS per method and query set, for the end of a run."""
    lines = [f"LDS ({cfg.lds.num_subsets} subset models at alpha {cfg.lds.alpha}; Spearman, "
             f"mean over queries, {cfg.lds.confidence:.0%} bootstrap CI):"]  # fmt: skip
    for m in layout.units("lds"):
        record = json.loads((layout.require("lds", m) / "lds.json").read_text())
        for q, r in record["queries"].items():
            ceiling = "" if r["ceiling"] is None else (
                f", ceiling {r['ceiling']:.3f} (two-seed agreement "
                f"{r['replicate_agreement']:.3f})")  # fmt: skip
            lines.append(f"- {m}, {q} ({r['num_queries']} queries): {r['lds']:.3f} "
                         f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]{ceiling}")  # fmt: skip
    return "\n".join(lines)
