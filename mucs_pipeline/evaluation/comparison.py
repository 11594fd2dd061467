"""One comparison of the report (the methods of one paper table, pooled over seeds): its
tables (Tables 1-3 and 5-9) and figures (Figs. 2-5, ROC curves, top-k training items)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io
from mucs_pipeline.attribution.base import METHODS, Method, method_class
from mucs_pipeline.constants import BASELINE
from mucs_pipeline.evaluation.protocol import result_rows, top_k_indices, top_k_sets
from mucs_pipeline.evaluation.stats import (
    compare,
    mean_ci,
    overlap_between_methods,
    pair_overlaps,
)
from mucs_pipeline.evaluation.tables import Num, write_table

log = logging.getLogger(__name__)


def pool(folders: list[Path]) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """Concatenate {subset: {method: {metric: (N,)}}} over runs."""
    pooled: dict = {}
    for folder in folders:
        for path in sorted(folder.glob("similarities_*.pt")):
            subset = path.stem.removeprefix("similarities_")
            for method, by_metric in io.load(path).items():
                for metric, values in by_metric.items():
                    slot = pooled.setdefault(subset, {}).setdefault(method, {})
                    slot[metric] = torch.cat([slot[metric], values]) if metric in slot else values
    return pooled


@dataclass
class Pooled:
    """One experiment's runs (a method's seeds) pooled: similarities and result rows."""

    sims: dict[str, dict[str, dict[str, torch.Tensor]]]
    rows: list[dict]


def pool_runs(runs: list[dict], alpha: float) -> Pooled:
    """The similarities of `runs` (resolved run.json records of one experiment) pooled, and
    their result rows against random removal."""
    method = runs[0]["method"]
    sims = pool([r["folder"] for r in runs])
    metrics = list(next(iter(sims.values()))[method])
    removed = {x: sum(r["removed"][x] for r in runs) for x in runs[0]["removed"]}
    return Pooled(sims, result_rows(method, sims, metrics, alpha, removed))


def paper_order(methods) -> list[str]:
    """Labels in the row order of the paper's tables (the registry's), others alphabetically."""
    order = list(METHODS)
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


def _method_class(cfg: DictConfig) -> type[Method]:
    """The class of a run's method, or the plain Method where it cannot be imported here
    (a method outside this package): its runs are still reported, without its figures."""
    try:
        return method_class(cfg)
    except ValueError as err:
        log.warning("method %s: %s", cfg.get("name"), err)
        return Method


def _slug(label: str) -> str:
    """A label as part of a file name: `mucs[lam=0.1]` -> `mucs-lam-0.1`."""
    return re.sub(r"[^\w.]+", "-", label).strip("-")


def _auc(r: dict) -> Num:
    best = r.get("p_vs_best")
    return Num(r["auc"], p=r["p_value"], star=bool(r["significant"]), p_best=best,
               dagger=bool(r.get("significant_vs_best")))  # fmt: skip


def markers(alpha: float) -> str:
    """The legend of the AUC tables' markers."""
    return (
        f"* one-sided Mann-Whitney U p < {alpha} against random removal; † against the best "
        "other method (highest AUC on the metric; the paper's marker)"
    )


def _diff(r: dict) -> Num:
    return Num(r["diff_pct"], ci=r["diff_ci"], spec=".1f")


def _control(r: dict) -> Num:
    return Num(r["auc"], p=r["p_value"], show_p=True)


class Comparison:
    """The runs of one comparison, by label (the method, or `mucs/<ablation>`), pooled."""

    def __init__(
        self,
        name: str,
        by_label: dict[str, list[dict]],
        alpha: float,
        pooled: dict[str, Pooled] | None = None,
    ):
        """`pooled`: each label's runs pooled already (the report pools each experiment
        once for its own tables and the comparisons); else pooled here."""
        self.name, self.runs, self.alpha = name, by_label, alpha
        self.labels = paper_order(by_label)
        self.method = {label: runs[0]["method"] for label, runs in by_label.items()}
        self.cfg = {lb: OmegaConf.create(runs[0]["method_cfg"]) for lb, runs in by_label.items()}
        self.cls = {lb: _method_class(cfg) for lb, cfg in self.cfg.items()}
        given = pooled or {}
        pools = {lb: given.get(lb) or pool_runs(by_label[lb], alpha) for lb in self.labels}
        self.pooled = {lb: p.sims for lb, p in pools.items()}
        self.rows = {lb: p.rows for lb, p in pools.items()}
        first = self.labels[0]
        self.metrics = list(self.pooled[first]["target"][self.method[first]])
        self.k = by_label[first][0]["k"]
        for lb in self.labels:  # the paper's marker: against the closest other method
            for metric, row in self.by_metric(lb).items():
                row["best_other"], p = self.against_best(lb, metric)
                row["p_vs_best"], row["significant_vs_best"] = p, p is not None and p < alpha

    def by_metric(self, label: str, subset: str = "target") -> dict[str, dict]:
        return {x["metric"]: x for x in self.rows[label] if x["subset"] == subset}

    def against_best(self, label: str, metric: str) -> tuple[str | None, float | None]:
        """The other method (not an ablation or sweep of this one) with the highest AUC on
        `metric`, and the one-sided U test's p that `label`'s removals lowered similarity
        more than that method's did (the paper's Table 1 marker); (None, None) alone."""
        others = [o for o in self.labels if self.method[o] != self.method[label]]
        others = [o for o in others if metric in self.by_metric(o)]
        if not others:
            return None, None
        best = max(others, key=lambda o: self.by_metric(o)[metric]["auc"])
        sims = [self.pooled[x]["target"][self.method[x]][metric].numpy() for x in (label, best)]
        return best, compare(*sims)[1]

    def per_metric(self, subset: str, value, mean_of: str | None) -> list[dict]:
        """One row per label: value(row) per metric, and the mean of a numeric column."""
        table = []
        for lb in self.labels:
            r = self.by_metric(lb, subset)
            if not r:
                continue
            line = {
                "method": lb,
                "runs": len(self.runs[lb]),
                "items": r[self.metrics[0]]["n_items"],
            }
            line.update({metric: value(r[metric]) for metric in self.metrics})
            if mean_of:
                line["mean"] = sum(r[x][mean_of] for x in self.metrics) / len(self.metrics)
            table.append(line)
        return table

    def scores(self) -> tuple[list[dict], dict[str, dict[int, list[set[int]]]]]:
        """Table 6 rows (amortised time) and every method's top-k sets by seed."""
        time_rows, sets = [], {}
        for lb in self.labels:
            per_run, capped = [], None
            for r in self.runs[lb]:
                for method, folder in r["attribute"].items():
                    key = lb if method == self.method[lb] else method
                    if key != lb and r["seed"] in sets.get(key, {}):
                        continue  # random, shared by every row: read once per seed
                    s = io.load(folder / "scores.pt")
                    setup = s.get("setup_seconds", 0.0) / len(s["seconds"])
                    sets.setdefault(key, {})[r["seed"]] = top_k_sets(s["scores"], r["k"], r["seed"])
                    if method == self.method[lb]:
                        per_run.append(s["seconds"].mean().item() + setup)
                        at_cap = self.cls[lb].items_at_cap(s)  # unlearnings without their stop
                        if at_cap is not None:
                            capped = (capped or 0) + at_cap
            mean, ci = mean_ci(per_run)
            time_rows.append(
                {
                    "method": lb,
                    "runs": len(per_run),
                    "seconds per item": Num(mean, ci=ci, spec=".2f"),
                    "minutes per item": mean / 60,
                    "items at max_steps": Num(capped, spec="d"),
                }
            )
        return time_rows, sets

    def overlap_tables(self, sets) -> tuple[list[dict], list[dict]]:
        """Table 7 (between the items of each run, pooled over runs) and Table 8."""
        items, matrix = [], []
        names = paper_order(sets)
        for a in names:
            pairs = [v for run_sets in sets[a].values() for v in pair_overlaps(run_sets, self.k)]
            mean, ci = mean_ci(pairs) if pairs else (float("nan"), 0.0)
            items.append(
                {"method": a, "runs": len(sets[a]), "overlap %": Num(mean, ci, spec=".1f")}
            )
            line = {"method": a}
            for b in names:
                seeds = sorted(set(sets[a]) & set(sets[b]))
                values = [overlap_between_methods(sets[a][s], sets[b][s], self.k) for s in seeds]
                line[b] = Num(sum(values) / len(values) if values and a != b else None, spec=".1f")
            matrix.append(line)
        return items, matrix

    def references(self) -> list[str]:
        """The reference rows (R): the proposed method alone, neither ablated nor swept."""
        return [lb for lb in self.labels if self.cls[lb].reference and lb == self.method[lb]]

    def ensemble_rows(self) -> tuple[list[str], list[dict]]:
        """Tables 3/9: the reference R and every ensemble, with their weights; and the
        weight columns (the ensembles' methods). R's weight on itself is the largest any
        ensemble gives it (the paper's 10)."""
        ens = [lb for lb in self.labels if self.cls[lb].components(self.cfg[lb])]
        weights = {lb: dict(self.cfg[lb].weights) for lb in ens}
        columns = list(dict.fromkeys(m for w in weights.values() for m in w))
        for ref in self.references() if ens else []:
            weights[ref] = {ref: max([w.get(ref, 0) for w in weights.values()], default=0) or 1}
        rows = []
        for lb in [lb for lb in self.labels if lb in weights and lb not in ens] + ens:
            r = self.by_metric(lb)
            line = {"method": lb, **{w: weights[lb].get(w, 0) for w in columns}}
            line.update({metric: _auc(r[metric]) for metric in self.metrics})
            line["mean"] = sum(r[x]["auc"] for x in self.metrics) / len(self.metrics)
            rows.append(line)
        return columns, rows

    def ablation_rows(self) -> list[dict]:
        """Table 2: each reference and its ablations (`<method>/<ablation>`, from
        `+ablation=...`), with the mean relative AUC change."""
        rows = []
        for name in self.references():
            rows += self._ablations(name, [lb for lb in self.labels if lb.startswith(name + "/")])
        return rows

    def _ablations(self, name: str, ablations: list[str]) -> list[dict]:
        if not ablations:
            return []
        ref = self.by_metric(name)
        rows = [{"row": "", "description": f"{name} (proposed)", "method": name}]
        rows[0].update({m: _auc(ref[m]) for m in self.metrics})
        mean_auc = sum(ref[m]["auc"] for m in self.metrics) / len(self.metrics)
        rows[0]["delta %"] = Num(0.0, text=f"({mean_auc:.3f})")  # the reference's own mean AUC
        for lb in ablations:
            r, info = self.by_metric(lb), self.runs[lb][0].get("ablation") or {}
            line = {
                "row": info.get("row", ""),
                "description": info.get("description", lb),
                "method": lb,
            }
            line.update({m: _auc(r[m]) for m in self.metrics})
            # Relative to the reference's AUC; undefined where that is 0 (a tiny run), so left out.
            rel = [
                (r[m]["auc"] - ref[m]["auc"]) / ref[m]["auc"] for m in self.metrics if ref[m]["auc"]
            ]
            delta = 100 * sum(rel) / len(rel) if rel else None
            line["delta %"] = Num(delta, text=None if delta is None else f"{delta:+.1f}%")
            rows.append(line)
        return rows


def comparison_report(
    name: str,
    by_label: dict[str, list[dict]],
    out: Path,
    alpha: float,
    pooled: dict[str, Pooled] | None = None,
):
    """Every table and figure of one comparison; returns {table name: markdown}."""
    out.mkdir(parents=True, exist_ok=True)
    c = Comparison(name, by_label, alpha, pooled)
    cols = ["method", "runs", "items", *c.metrics, "mean"]
    tables = {
        "table1_auc": write_table(
            c.per_metric("target", _auc, "auc"), cols, out / "table1_auc",
            f"AUC against random removal ({name}); {markers(alpha)}",
        ),
        "table5_difference": write_table(
            c.per_metric("target", _diff, "diff_pct"), cols, out / "table5_difference",
            "Mean normalised similarity difference (%, App. B.1), 95% CI; lower = more change",
        ),
        "control": write_table(
            c.per_metric("control", _control, None), cols[:-1], out / "control",
            "Control items (generated, not attributed): AUC and two-sided p; expected near 0.5",
        ),
    }  # fmt: skip
    time_rows, sets = c.scores()
    tables["table6_time"] = write_table(
        time_rows,
        ["method", "runs", "seconds per item", "minutes per item", "items at max_steps"],
        out / "table6_time",
        "Amortised attribution time per generated item (shared setup / m + per-item time)",
    )  # fmt: skip
    items, matrix = c.overlap_tables(sets)
    tables["table7_overlap_items"] = write_table(
        items, ["method", "runs", "overlap %"], out / "table7_overlap_items",
        f"Top-k overlap (%) between generated items (k = {c.k}; random expects 100 k / |Z|)",
    )  # fmt: skip
    tables["table8_overlap_methods"] = write_table(
        matrix, ["method", *paper_order(sets)], out / "table8_overlap_methods",
        "Top-k overlap (%) between methods on the same generated item",
    )  # fmt: skip
    weight_columns, rows = c.ensemble_rows()
    if rows:
        tables["table3_ensembles"] = write_table(
            rows, ["method", *weight_columns, *c.metrics, "mean"], out / "table3_ensembles",
            f"Rank ensembles (App. A.4) against the proposed method alone: weights and AUC; "
            f"{markers(alpha)}",
        )  # fmt: skip
    if rows := c.ablation_rows():
        tables["table2_ablations"] = write_table(
            rows, ["row", "description", "method", *c.metrics, "delta %"], out / "table2_ablations",
            "Ablations: AUC and mean relative AUC difference to the method ablated; "
            f"{markers(alpha)}",
        )  # fmt: skip
    comparison_figures(c, out)
    return tables


def comparison_figures(c: Comparison, out: Path) -> None:
    """Fig. 2 distributions and ROC curves (pooled), regeneration grid, trajectories, top-k."""
    from mucs_pipeline.evaluation import figures

    target = {lb: c.pooled[lb]["target"][c.method[lb]] for lb in c.labels}
    target[BASELINE] = c.pooled[c.labels[0]]["target"][BASELINE]
    for metric in c.metrics:
        path = out / f"fig_similarity_{metric}.png"
        figures.similarity_distributions(target, BASELINE, metric, path)
        figures.roc_curves(target, BASELINE, metric, out / f"fig_roc_{metric}.png")
    first = c.runs[c.labels[0]][0]
    metric = c.metrics[0]
    grid = [io.load(first["generate"] / "items.pt")["target"]["images"]]
    n = len(grid[0])
    labels, captions = ["original"], [[f"item {i}" for i in range(n)]]

    def add(label: str, run: dict, method: str) -> None:
        grid.append(io.load(run["regenerate"][method] / "items.pt")["target"]["images"])
        sims = io.load(run["folder"] / "similarities_target.pt")[method][metric]
        labels.append(label)
        captions.append([f"{metric} {v:.3f}" for v in sims.tolist()])

    for lb in c.labels:  # rows: reference, each method on the first run's seed, random
        runs = [r for r in c.runs[lb] if r["seed"] == first["seed"]]
        if runs:
            add(lb, runs[0], c.method[lb])
    add(BASELINE, first, BASELINE)
    figures.save_grid(
        grid, out / "fig_regenerations.png", labels, captions,
        title=f"Seed {first['seed']}: original and regenerated after each method's removal",
    )  # fmt: skip
    for lb in [lb for lb in c.labels if "/" not in lb]:  # each method's own, not ablations'
        run = c.runs[lb][0]
        scores = io.load(run["attribute"][c.method[lb]] / "scores.pt")
        c.cls[lb].figures(c.cfg[lb], scores, out, f"fig_{_slug(lb)}_")
    top_k_figures(c, out)


def top_k_figures(c: Comparison, out: Path, n_items: int = 4, n_top: int = 8) -> None:
    """Per method: each of the first generated items next to its top training items."""

    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.data.base import DatasetError
    from mucs_pipeline.evaluation.figures import save_top_k

    first = c.runs[c.labels[0]][0]
    try:
        data = build_dataset(OmegaConf.create(first["dataset_cfg"]))
    except (DatasetError, FileNotFoundError) as err:  # the report may run where the data is not
        log.warning("no top-k figures: the training set cannot be read here (%s)", err)
        return
    items = io.load(first["generate"] / "items.pt")["target"]["images"][:n_items]
    for lb in c.labels:
        run = c.runs[lb][0]
        scores = io.load(run["attribute"][c.method[lb]] / "scores.pt")["scores"][:n_items]
        top = top_k_indices(scores, n_top, run["seed"])
        title = f"{lb} (seed {run['seed']}): generated items, their top-{n_top} training items"
        save_top_k(items, data.x, top, out / f"fig_top_k_{_slug(lb)}.png", "generated", title)
