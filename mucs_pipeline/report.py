"""`python -m mucs_pipeline.report <runs dir>`: the paper's tables and figures from finished runs.

The paper pools 6 runs x 20 items. This finds every finished evaluate stage under the
folder and writes, under `<runs dir>/report/`:

- per experiment (the config minus the seed), `<name>-<method>-<experiment key>/`: the
  pooled results.csv / results.md of that method against random removal;
- per comparison (the config minus method and seed: the methods of one paper table),
  `<name>-<comparison key>/`: Table 1 (AUC), Table 5 (App. B.1 differences), control
  items, Table 6 (time per item), Table 7 (top-k overlap between items), Table 8
  (between methods), Tables 3/9 (ensembles), each as .md, .csv and .tex, and the
  figures: similarity distributions (Fig. 2), ROC curves, reference vs regenerated
  grids (Figs. 3-5), MUCS unlearning trajectories, top-k training items per item.

`--wandb` also logs every table and figure to one W&B run per comparison (offline unless
WANDB_MODE says otherwise; numbers in separate columns, so W&B sorts and plots them), and
`--sync` uploads every offline W&B run under the folder (each stage's and the report's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from mucs_pipeline import artifacts as io
from mucs_pipeline.cli import one_line_errors
from mucs_pipeline.layout import BASELINE, read_manifest
from mucs_pipeline.stages.evaluate import result_rows, write_tables

log = logging.getLogger(__name__)

# The fields of run.json that the report reads, with their types.
_RUN = {
    "name": str, "seed": int, "method": str, "experiment_key": str, "comparison_key": str,
    "removed": dict, "k": int, "folder": str, "attribute": dict, "regenerate": dict,
    "generate": str, "method_cfg": dict, "dataset_cfg": dict,
}  # fmt: skip


def _resolve(info: dict, info_path: Path) -> str | None:
    """Resolve the artifact folders of `info` (relative to the runs folder) where that
    folder is now, in place; or say why the run cannot be used."""
    if not isinstance(info, dict):
        return "not a JSON object"
    wrong = [k for k, t in _RUN.items() if not isinstance(info.get(k), t)]
    if wrong:
        return (
            f"missing or mistyped fields {wrong} (an older mucs_pipeline wrote absolute "
            "paths: rerun its evaluate stage with stages=[evaluate] force=true)"
        )
    rel = Path(info["folder"])
    if rel.is_absolute() or info_path.parent.parts[-len(rel.parts) :] != rel.parts:
        return f"it describes the run folder {rel}, not the one it lies in"
    runs_dir = info_path.parents[len(rel.parts)]
    info["folder"] = info_path.parent
    info["generate"] = runs_dir / info["generate"]
    for stage in ("attribute", "regenerate"):
        info[stage] = {m: runs_dir / p for m, p in info[stage].items()}
    needed = [info["folder"] / "similarities_target.pt", info["generate"] / "items.pt"]
    needed += [p / "scores.pt" for p in info["attribute"].values()]
    needed += [p / "items.pt" for p in info["regenerate"].values()]
    missing = [str(p) for p in needed if not p.exists()]
    return f"missing {', '.join(missing)}" if missing else None


def read_run(info_path: Path) -> dict | None:
    """A finished evaluation's run.json with its artifact folders resolved, or None: an
    unfinished run, or (with a warning naming it) one that cannot be used."""
    manifest = info_path.parent / "manifest.json"
    if not manifest.exists():
        return None  # unfinished
    try:
        read_manifest(manifest)
        info = json.loads(info_path.read_text())
        problem = _resolve(info, info_path)
    except io.DamagedFileError as err:
        problem = str(err)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = f"not valid JSON ({err})"
    if problem:
        log.warning("skipping %s: %s", info_path, problem)
        return None
    return info


def read_runs(root: Path) -> list[dict]:
    """Every usable finished evaluation under root."""
    return [r for p in sorted(root.rglob("evaluate/*/run.json")) if (r := read_run(p))]


def find_runs(root: Path, runs: list[dict] | None = None) -> dict[tuple[str, str, str], list[Path]]:
    """Finished evaluate folders under root (or of `runs`, from read_runs), grouped by
    (name, method, experiment key)."""
    groups: dict[tuple[str, str, str], dict[int, Path]] = defaultdict(dict)
    for info in read_runs(root) if runs is None else runs:
        groups[info["name"], info["method"], info["experiment_key"]][info["seed"]] = info["folder"]
    return {k: [v[s] for s in sorted(v)] for k, v in groups.items()}


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


def report(root: Path, alpha: float = 0.01, runs: list[dict] | None = None) -> list[Path]:
    """Write the pooled tables of every experiment under root; return their folders."""
    written = []
    for (name, method, key), folders in find_runs(root, runs).items():
        sims = pool(folders)
        metrics = list(next(iter(sims.values()))[method])
        infos = [json.loads((f / "run.json").read_text()) for f in folders]
        removed = {m: sum(i["removed"][m] for i in infos) for m in infos[0]["removed"]}
        rows = result_rows(method, sims, metrics, alpha, removed)
        out = root / "report" / f"{name}-{method}-{key}"
        out.mkdir(parents=True, exist_ok=True)
        table = write_tables(rows, out)
        seeds = [i["seed"] for i in infos]
        pooled = [f.relative_to(root).as_posix() for f in folders]  # relative: the folder moves
        io.atomic_write_text(out / "runs.json", json.dumps(pooled, indent=2))
        print(f"\n{name} / {method}: {len(folders)} runs (seeds {seeds}) pooled -> {out}\n{table}")
        written.append(out)
    if not written:
        raise SystemExit(f"no finished evaluate stage under {root}")
    return written


# Row order of the paper's tables; other methods follow alphabetically.
ORDER = [
    "random",
    "condition",
    "pixel",
    "clip",
    "dino",
    "dtrak",
    "das",
    "forward_inf",
    "abu",
    "mucs",
]
WEIGHT_COLUMNS = [
    "mucs",
    "das",
    "dtrak",
    "dino",
    "clip",
    "condition",
    "pixel",
    "forward_inf",
    "abu",
]


def _order(methods) -> list[str]:
    return sorted(methods, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


@dataclass(frozen=True)
class Num:
    """A table cell holding a number: text in .md, .csv and .tex ("0.812*", "1.2±0.3",
    "0.50 (p=0.62)"); separate numeric columns in .json and W&B (value, _ci, _p)."""

    value: float | None
    ci: float | None = None  # half-width of the 95% confidence interval
    p: float | None = None  # the test's p-value
    star: bool = False  # significant: "*" after the text
    spec: str = ".3f"  # format of the value (and the CI)
    show_p: bool = False  # "(p=...)" after the text
    text: str | None = None  # the text instead of the formatted value

    def __str__(self) -> str:
        if self.text is not None:
            return self.text
        if self.value is None:
            return "-"
        out = format(self.value, self.spec)
        if self.ci is not None:
            out += "±" + format(self.ci, self.spec.lstrip("+"))
        if self.show_p and self.p is not None:
            out += f" (p={self.p:.2g})"
        return out + ("*" if self.star else "")


def numeric(rows: list[dict], columns: list[str]) -> tuple[list[str], list[list]]:
    """Columns and rows with every Num split into numbers: `c`, and `c_ci` / `c_p` where
    any row of column `c` has them; what W&B sorts and plots."""

    def has(c: str, part: str) -> bool:
        return any(isinstance(r.get(c), Num) and getattr(r[c], part) is not None for r in rows)

    parts = {c: [part for part in ("ci", "p") if has(c, part)] for c in columns}

    def cells(r: dict) -> list:
        out = []
        for c in columns:
            num = r.get(c) if isinstance(r.get(c), Num) else None
            out.append(num.value if num else r.get(c))
            out += [getattr(num, part) if num else None for part in parts[c]]
        return out

    return [x for c in columns for x in (c, *[f"{c}_{p}" for p in parts[c]])], [
        cells(r) for r in rows
    ]


def fmt(value) -> str:
    if isinstance(value, Num):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.3f}"
    return str(value)


def write_table(rows: list[dict], columns: list[str], base: Path, caption: str) -> str:
    """base.md, base.csv and base.tex of one table, and base.json with its numbers in
    separate columns (value, CI, p: see `numeric`); returns the Markdown."""
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    md = [f"{caption}\n", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(row) + " |" for row in cells]
    markdown = "\n".join(md) + "\n"
    io.atomic_write_text(base.with_suffix(".md"), markdown)
    csv_lines = [",".join(columns)] + [",".join(row) for row in cells]
    io.atomic_write_text(base.with_suffix(".csv"), "\n".join(csv_lines) + "\n")

    def tex(text: str) -> str:
        return text.replace("_", "\\_").replace("%", "\\%").replace("±", "$\\pm$")

    body = [" & ".join(tex(c) for c in row) + " \\\\" for row in cells]
    latex = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex(caption)}}}",
        "\\begin{tabular}{" + "l" + "r" * (len(columns) - 1) + "}",
        "\\toprule",
        " & ".join(tex(c) for c in columns) + " \\\\",
        "\\midrule",
        *body,
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
    ]
    io.atomic_write_text(base.with_suffix(".tex"), "\n".join(latex) + "\n")
    number_columns, data = numeric(rows, columns)
    table = {"caption": caption, "columns": number_columns, "data": data}
    io.atomic_write_text(base.with_suffix(".json"), json.dumps(table, indent=1))
    return markdown


def find_comparisons(
    root: Path, runs: list[dict] | None = None
) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """Finished evaluations under root (or `runs`, from read_runs) grouped by (name,
    comparison key), then by method; each run is its resolved run.json, sorted by seed."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for info in read_runs(root) if runs is None else runs:
        label = info.get("label", info["method"])  # mucs/<ablation> for Table 2 rows
        groups[info["name"], info["comparison_key"]][label].append(info)
    return {
        k: {m: sorted(runs, key=lambda r: r["seed"]) for m, runs in _split_settings(v).items()}
        for k, v in groups.items()
    }


def _split_settings(by_label: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Runs of one label with other method settings (a lambda sweep) are rows of their own,
    labelled with the settings that differ, `mucs[lam=0.1]`: only seeds are pooled."""
    out = {}
    for label, runs in by_label.items():
        by_key = defaultdict(list)
        for r in runs:
            by_key[r["experiment_key"]].append(r)
        if len(by_key) == 1:
            out[label] = runs
            continue
        cfgs = [group[0]["method_cfg"] for group in by_key.values()]
        keys = sorted({k for c in cfgs for k in c})
        differ = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs}) > 1]
        for group, cfg in zip(by_key.values(), cfgs, strict=True):
            settings = ",".join(f"{k}={cfg.get(k)}" for k in differ)
            out[f"{label}[{settings}]"] = group
    return out


def _slug(label: str) -> str:
    """A label as part of a file name: `mucs[lam=0.1]` -> `mucs-lam-0.1`."""
    return re.sub(r"[^\w.]+", "-", label).strip("-")


def _auc(r: dict) -> Num:
    return Num(r["auc"], p=r["p_value"], star=bool(r["significant"]))


def _diff(r: dict) -> Num:
    return Num(r["diff_pct"], ci=r["diff_ci"], spec=".1f")


def _control(r: dict) -> Num:
    return Num(r["auc"], p=r["p_value"], show_p=True)


class Comparison:
    """The runs of one comparison, by label (the method, or `mucs/<ablation>`), pooled."""

    def __init__(self, name: str, by_label: dict[str, list[dict]], alpha: float):
        self.name, self.runs, self.alpha = name, by_label, alpha
        self.labels = _order(by_label)
        self.method = {label: runs[0]["method"] for label, runs in by_label.items()}
        self.pooled = {lb: pool([r["folder"] for r in by_label[lb]]) for lb in self.labels}
        first = self.labels[0]
        self.metrics = list(self.pooled[first]["target"][self.method[first]])
        self.rows = {}
        for lb in self.labels:
            runs = by_label[lb]
            removed = {x: sum(r["removed"][x] for r in runs) for x in runs[0]["removed"]}
            self.rows[lb] = result_rows(
                self.method[lb], self.pooled[lb], self.metrics, alpha, removed
            )
        self.k = by_label[first][0]["k"]

    def by_metric(self, label: str, subset: str = "target") -> dict[str, dict]:
        return {x["metric"]: x for x in self.rows[label] if x["subset"] == subset}

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
        from mucs_pipeline.evaluation.stats import mean_ci, top_k_sets

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
                        if "hit_max_steps" in s:  # unlearning that never met its stop rule
                            capped = (capped or 0) + int(s["hit_max_steps"].sum())
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
        from mucs_pipeline.evaluation.stats import mean_ci, overlap_between_methods, pair_overlaps

        items, matrix = [], []
        names = _order(sets)
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

    def ensemble_rows(self) -> list[dict]:
        """Tables 3/9: MUCS as reference R and every ensemble, with their weights."""
        ens = [lb for lb in self.labels if self.runs[lb][0]["method_cfg"].get("kind") == "ensemble"]
        rows = []
        for lb in (["mucs"] if ens and "mucs" in self.labels else []) + ens:
            weights = self.runs[lb][0]["method_cfg"].get("weights", {"mucs": 10})
            r = self.by_metric(lb)
            line = {"method": lb, **{w: weights.get(w, 0) for w in WEIGHT_COLUMNS}}
            line.update({metric: _auc(r[metric]) for metric in self.metrics})
            line["mean"] = sum(r[x]["auc"] for x in self.metrics) / len(self.metrics)
            rows.append(line)
        return rows

    def ablation_rows(self) -> list[dict]:
        """Table 2: MUCS and its ablations (`+ablation=...`), with the mean relative AUC change."""
        ablations = [lb for lb in self.labels if "/" in lb]
        if not ablations or "mucs" not in self.labels:
            return []
        ref = self.by_metric("mucs")
        rows = [{"row": "", "description": "MUCS (proposed)", "method": "mucs"}]
        rows[0].update({m: _auc(ref[m]) for m in self.metrics})
        mean_auc = sum(ref[m]["auc"] for m in self.metrics) / len(self.metrics)
        rows[0]["delta %"] = Num(0.0, text=f"({mean_auc:.3f})")  # MUCS's own mean AUC
        for lb in ablations:
            r, info = self.by_metric(lb), self.runs[lb][0].get("ablation") or {}
            line = {
                "row": info.get("row", ""),
                "description": info.get("description", lb),
                "method": lb,
            }
            line.update({m: _auc(r[m]) for m in self.metrics})
            # Relative to MUCS's AUC; undefined where that is 0 (a tiny run), so left out.
            rel = [
                (r[m]["auc"] - ref[m]["auc"]) / ref[m]["auc"] for m in self.metrics if ref[m]["auc"]
            ]
            delta = 100 * sum(rel) / len(rel) if rel else None
            line["delta %"] = Num(delta, text=None if delta is None else f"{delta:+.1f}%")
            rows.append(line)
        return rows


def comparison_report(name: str, by_label: dict[str, list[dict]], out: Path, alpha: float):
    """Every table and figure of one comparison; returns {table name: markdown}."""
    out.mkdir(parents=True, exist_ok=True)
    c = Comparison(name, by_label, alpha)
    cols = ["method", "runs", "items", *c.metrics, "mean"]
    tables = {
        "table1_auc": write_table(
            c.per_metric("target", _auc, "auc"), cols, out / "table1_auc",
            f"AUC against random removal ({name}); * one-sided Mann-Whitney U p < {alpha}",
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
        matrix, ["method", *_order(sets)], out / "table8_overlap_methods",
        "Top-k overlap (%) between methods on the same generated item",
    )  # fmt: skip
    if rows := c.ensemble_rows():
        tables["table3_ensembles"] = write_table(
            rows, ["method", *WEIGHT_COLUMNS, *c.metrics, "mean"], out / "table3_ensembles",
            "Rank ensembles (App. A.4) against MUCS alone: weights and AUC",
        )  # fmt: skip
    if rows := c.ablation_rows():
        tables["table2_ablations"] = write_table(
            rows, ["row", "description", "method", *c.metrics, "delta %"], out / "table2_ablations",
            "Ablations of MUCS: AUC and mean relative AUC difference to MUCS",
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
    # Plain MUCS, else its first setting of a sweep (mucs[lam=0.1]); not an ablation.
    mucs = [lb for lb in c.labels if c.method[lb] == "mucs" and "/" not in lb]
    if mucs:
        run = c.runs["mucs" if "mucs" in mucs else mucs[0]][0]
        scores = io.load(run["attribute"]["mucs"] / "scores.pt")
        stop = run["method_cfg"].get("stop_ratio", 0.95)
        figures.trajectories(
            scores["trajectories"], scores.get("loss_null"), out / "fig_mucs_trajectories.png", stop
        )
    top_k_figures(c, out)


def top_k_figures(c: Comparison, out: Path, n_items: int = 4, n_top: int = 8) -> None:
    """Per method: each of the first generated items next to its top training items."""
    from omegaconf import OmegaConf

    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.data.base import DatasetError
    from mucs_pipeline.evaluation.figures import save_grid
    from mucs_pipeline.stages.retrain import top_k_indices

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
        rows = [torch.cat([items[i : i + 1], data.x[top[i]]]) for i in range(len(items))]
        captions = [["generated", *[f"#{r + 1}: z{int(j)}" for r, j in enumerate(t)]] for t in top]
        save_grid(
            rows, out / f"fig_top_k_{_slug(lb)}.png",
            [f"item {i}" for i in range(len(items))], captions,
            title=f"{lb} (seed {run['seed']}): generated items, their top-{n_top} training items",
        )  # fmt: skip


def report_comparisons(
    root: Path, alpha: float = 0.01, use_wandb: bool = False, runs: list[dict] | None = None
) -> list[Path]:
    written = []
    for (name, key), by_method in find_comparisons(root, runs).items():
        out = root / "report" / f"{name}-{key}"
        tables = comparison_report(name, by_method, out, alpha)
        print(f"\n{name}, comparison {key}: {', '.join(_order(by_method))} -> {out}")
        print(tables["table1_auc"])
        if use_wandb:
            log_report_wandb(name, key, out)
        written.append(out)
    return written


def log_report_wandb(name: str, key: str, out: Path) -> None:
    """The report's tables (wandb.Table) and figures (wandb.Image) in one W&B run."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project="mucs_pipeline",
        group=f"{name}-{key[:8]}",  # the group of the comparison's stage runs
        job_type="report",
        name=f"{name}-report-{key[:8]}",
        tags=[f"name:{name}", "stage:report"],
        config={"name": name, "comparison_key": key},
        mode=os.environ.get("WANDB_MODE", "offline"),  # as logger=wandb: `--sync` uploads
        dir=str(out),
        reinit="finish_previous",
    )
    for path in sorted(out.glob("*.json")):
        table = json.loads(path.read_text())
        if isinstance(table, dict) and "columns" in table:  # a table (value, _ci, _p columns)
            run.log({path.stem: wandb.Table(columns=table["columns"], data=table["data"])})
    for path in sorted(out.glob("fig_*.png")):
        run.log({path.stem: wandb.Image(str(path))})
    run.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="a runs folder (paths.runs_dir) or part of it")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level")
    parser.add_argument("--wandb", action="store_true", help="also log tables and figures to W&B")
    parser.add_argument(
        "--sync", action="store_true",
        help="upload every offline W&B run under runs_dir not yet synced (`wandb sync`); "
        "alone it only syncs, with --wandb it syncs after logging the report",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="with --sync: list the runs, upload nothing"
    )
    args = parser.parse_args()
    from mucs_pipeline import tracking

    if args.sync and not args.wandb:
        tracking.sync(args.runs_dir, args.dry_run)
        return
    with one_line_errors():  # a damaged artifact is one line naming it
        runs = read_runs(args.runs_dir)  # read once: a run that cannot be used is named once
        report(args.runs_dir, args.alpha, runs)
        report_comparisons(args.runs_dir, args.alpha, args.wandb, runs)
    if args.sync:
        tracking.sync(args.runs_dir, args.dry_run)


if __name__ == "__main__":
    main()
