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
  grids (Figs. 3-5), each method's own figures (MUCS: unlearning trajectories), top-k
  training items per item;
- per set of LDS subset models (lds=on), `lds-<name>-seed<seed>-<outputs key>/`: every
  method's LDS with CIs next to its leave-k-out AUC, figures, and the two protocols'
  rank agreement (mucs_pipeline.lds_report).

`--wandb` also logs every table and figure to one W&B run per comparison (offline unless
WANDB_MODE says otherwise; numbers in separate columns, so W&B sorts and plots them), and
`--sync` uploads every offline W&B run under the folder (each stage's and the report's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import defaultdict
from pathlib import Path

from mucs_pipeline import artifacts as io
from mucs_pipeline.cli import one_line_errors
from mucs_pipeline.evaluation import diagnostics
from mucs_pipeline.evaluation.comparison import Pooled, comparison_report, paper_order, pool_runs
from mucs_pipeline.evaluation.protocol import write_results
from mucs_pipeline.lds_report import report_lds
from mucs_pipeline.manifest import read_manifest

log = logging.getLogger(__name__)

# What a comparison's report writes in its folder (tables in four formats, figures);
# rewriting the folder removes those of them the new report did not write.
REPORT_FILES = ["table*.*", "control.*", "fig_*.png"]

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


Experiment = tuple[str, str, str]  # (name, method, experiment key): one method's seeds


def find_runs(root: Path, runs: list[dict] | None = None) -> dict[Experiment, list[dict]]:
    """Finished evaluations under root (or `runs`, from read_runs), grouped by experiment,
    each group sorted by seed."""
    groups: dict[Experiment, dict[int, dict]] = defaultdict(dict)
    for info in read_runs(root) if runs is None else runs:
        groups[info["name"], info["method"], info["experiment_key"]][info["seed"]] = info
    return {k: [v[s] for s in sorted(v)] for k, v in groups.items()}


def pool_experiments(runs: list[dict], alpha: float) -> dict[Experiment, Pooled]:
    """Every experiment of `runs` pooled once, for its own tables and its comparison's."""
    return {k: pool_runs(group, alpha) for k, group in find_runs(Path(), runs).items()}


def report(
    root: Path,
    alpha: float = 0.01,
    runs: list[dict] | None = None,
    pooled: dict[Experiment, Pooled] | None = None,
) -> list[Path]:
    """Write the pooled tables of every experiment under root; return their folders.
    `pooled`: from pool_experiments (else pooled here)."""
    written = []
    for (name, method, key), infos in find_runs(root, runs).items():
        folders = [i["folder"] for i in infos]
        given = (pooled or {}).get((name, method, key))
        rows = (given or pool_runs(infos, alpha)).rows
        out = root / "report" / f"{name}-{method}-{key}"
        out.mkdir(parents=True, exist_ok=True)
        seeds = [i["seed"] for i in infos]
        notes = diagnostics.markdown({i["seed"]: i.get("diagnostics") for i in infos})
        table = write_results(
            rows, out, f"{name}, {method}, seeds {seeds} pooled", alpha, len(folders), notes
        )
        members = [f.relative_to(root).as_posix() for f in folders]  # relative: the folder moves
        io.atomic_write_text(out / "runs.json", json.dumps(members, indent=2))
        print(f"\n{name} / {method}: {len(folders)} runs (seeds {seeds}) pooled -> {out}\n{table}")
        written.append(out)
    if not written:
        raise SystemExit(f"no finished evaluate stage under {root}")
    return written


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


def run_settings(run: dict) -> dict:
    """What a run's method was set to: its config, and whether it scored in bfloat16."""
    return {**run["method_cfg"], "bf16_scores": bool(run.get("bf16_scores"))}


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
        cfgs = [run_settings(group[0]) for group in by_key.values()]
        keys = sorted({k for c in cfgs for k in c})
        differ = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs}) > 1]
        for key, group, cfg in zip(by_key, by_key.values(), cfgs, strict=True):
            # No setting differs: keys made by other code versions; the key tells them apart
            settings = ",".join(f"{k}={cfg.get(k)}" for k in differ) or f"key={key}"
            out[f"{label}[{settings}]"] = group
    return out


def report_comparisons(
    root: Path,
    alpha: float = 0.01,
    use_wandb: bool = False,
    runs: list[dict] | None = None,
    pooled: dict[Experiment, Pooled] | None = None,
) -> list[Path]:
    """Write every comparison's tables and figures; `pooled`: from pool_experiments."""
    written = []
    for (name, key), by_method in find_comparisons(root, runs).items():
        out = root / "report" / f"{name}-{key}"
        given = {}
        for label, group in by_method.items():
            experiment = (name, group[0]["method"], group[0]["experiment_key"])
            if pooled and experiment in pooled:
                given[label] = pooled[experiment]
        with io.rewrite_folder(out, REPORT_FILES):
            tables = comparison_report(name, by_method, out, alpha, given)
        print(f"\n{name}, comparison {key}: {', '.join(paper_order(by_method))} -> {out}")
        print(tables["table1_auc"])
        if use_wandb:
            log_report_wandb(name, key, out)
        written.append(out)
    return written


def log_report_wandb(name: str, key: str, out: Path) -> None:
    """The report's tables (wandb.Table) and figures (wandb.Image) in one W&B run."""
    import wandb

    from mucs_pipeline import tracking

    run = tracking.start(
        {
            "project": "mucs_pipeline",
            "group": f"{name}-{key[:8]}",  # the group of the comparison's stage runs
            "job_type": "report",
            "name": f"{name}-report-{key[:8]}",
            "tags": [f"name:{name}", "stage:report"],
            "config": {"name": name, "comparison_key": key},
        },
        os.environ.get("WANDB_MODE", "offline"),  # as logger=wandb: `--sync` uploads
        out,
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
        pooled = pool_experiments(runs, args.alpha)  # once, for both kinds of table
        if runs:
            report(args.runs_dir, args.alpha, runs, pooled)
            report_comparisons(args.runs_dir, args.alpha, args.wandb, runs, pooled)
        lds = report_lds(args.runs_dir)
        if not runs and not lds:
            raise SystemExit(f"no finished evaluate or lds stage under {args.runs_dir}")
        for name, key, out in lds if args.wandb else []:
            log_report_wandb(name, f"lds-{key}", out)
    if args.sync:
        tracking.sync(args.runs_dir, args.dry_run)


if __name__ == "__main__":
    main()
