"""Which knobs find the leave-k-out signal on small natural-image folders, and at what CPU
cost (issue 22).

Runs the protocol (MUCS and, unless `--methods mucs`, pixel nearest neighbours against
random removal) on the two folders of scripts/make_folders.py under named settings, each a
list of overrides of one knob, then pools each setting's seeds as `mucs_pipeline.report`
does and writes one table: AUC and p per method and metric, the setup's diagnostics, and
the CPU minutes one seed of MUCS against random removal cost (the wall time its units
recorded in their manifests: pretraining, generation, L_null, MUCS's attribution, both
retrains and regenerations, evaluation).

  python scripts/make_folders.py --out folders
  python scripts/folder_recipes.py --folders folders --runs runs_folders \\
      --settings default,epochs1280 --seeds 0

Every run is the pipeline's own CLI (`python -m mucs_pipeline ...`, printed before it
starts), so a killed measurement resumes where it stopped and the same command gives the
same numbers. Writes docs/small_folders.md (and .json) with every setting measured so far.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from mucs_pipeline import api
from mucs_pipeline import artifacts as io
from mucs_pipeline.constants import BASELINE
from mucs_pipeline.evaluation.comparison import pool
from mucs_pipeline.evaluation.protocol import result_rows
from mucs_pipeline.graph import STAGES
from mucs_pipeline.layout import Layout

# The folders as a user would point the pipeline at them.
FOLDERS = {
    "photos": ["dataset.resolution=8", "dataset.channels=3"],
    "faces": ["dataset.resolution=8", "dataset.channels=1"],
}
# One knob each, against `default` (the project's default recipe, 3,000 steps).
SETTINGS = {
    "default": [],
    "epochs640": ["pretrain.epochs=640"],  # 3,000 steps on 600 items (photos: default's units)
    "epochs1280": ["pretrain.epochs=1280"],
    "epochs1920": ["pretrain.epochs=1920"],  # +recipe=small_folder (faces: default's units)
    "wide": ["model.hidden=128", "model.cond_width=128"],
    "k5": ["evaluate.k_fraction=0.05"],
    "items40": ["generate.num_items=40"],
}
METHODS = ("mucs", "pixel")  # MUCS is always run; pixel is the similarity baseline beside it


def overrides(folders: Path, folder: str, setting: list[str], seed: int, runs: Path) -> list[str]:
    return [
        "dataset=folder", f"dataset.root={(folders / folder).resolve()}", *FOLDERS[folder],
        f"name={folder}", f"seed={seed}", f"paths.runs_dir={runs.resolve()}", "logger=csv",
        *setting,
    ]  # fmt: skip


def run_pipeline(args: list[str], methods: list[str]) -> None:
    command = [sys.executable, "-m", "mucs_pipeline", "-m", f"method={','.join(methods)}", *args]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


def layout(args: list[str], method: str) -> Layout:
    """The units' folders of one run, exactly as the pipeline keys them."""
    return Layout(api.compose([*args, f"method={method}"]))  # prepared: epochs as steps


def cpu_seconds(lay: Layout) -> float:
    """Wall time recorded by every unit this run used (shared ones, such as random removal
    with its pretraining, counted once)."""
    seen = {}
    for stage in STAGES:
        for method in lay.units(stage):
            folder = lay.dir(stage, method)
            manifest = folder / "manifest.json"
            if folder not in seen and manifest.exists():
                seen[folder] = json.loads(manifest.read_text()).get("wall_time_s", 0.0)
    return sum(seen.values())


def measure(
    folders: Path, runs: Path, folder: str, name: str, seeds: list[int], methods: list[str]
) -> dict:
    """Pooled results of one setting on one folder over `seeds`."""
    by_seed = {s: overrides(folders, folder, SETTINGS[name], s, runs) for s in seeds}
    layouts = {m: [layout(args, m) for args in by_seed.values()] for m in methods}
    row = {"folder": folder, "setting": name, "overrides": SETTINGS[name], "seeds": seeds}
    for method, lays in layouts.items():
        evaluated = [lay.dir("evaluate", method) for lay in lays]
        infos = [json.loads((f / "run.json").read_text()) for f in evaluated]
        removed = {m: sum(i["removed"][m] for i in infos) for m in (method, BASELINE)}
        sims = pool(evaluated)
        metrics = list(sims["target"][method])
        for r in result_rows(method, sims, metrics, 0.01, removed):
            if r["subset"] == "target":
                row[f"{method}_{r['metric']}"] = {
                    k: r[k] for k in ("auc", "p_value", "n_items", "items_needed", "diff_pct")
                }
        diagnostics = {s: i.get("diagnostics") for s, i in zip(seeds, infos, strict=True)}
        row.setdefault("diagnostics", diagnostics)  # MUCS run's: drift and fit are shared
    per_seed = [cpu_seconds(lay) for lay in layouts["mucs"]]
    row["cpu_minutes_per_seed"] = sum(per_seed) / len(per_seed) / 60
    row["train_steps"] = int(layouts["mucs"][0].cfg.pretrain.steps)
    return row


def cell(result: dict | None) -> str:
    return f"{result['auc']:.3f} ({result['p_value']:.2g})" if result else "not run"


def values(row: dict, prefix: str) -> list[float]:
    """One diagnostic's value in each seed's run."""
    return [
        d["value"] for diags in row["diagnostics"].values() if diags
        for d in diags if d["diagnostic"].startswith(prefix)
    ]  # fmt: skip


def diagnostic(row: dict, prefix: str) -> str:
    found = values(row, prefix)
    return f"{sum(found) / len(found):.3f}" if found else ""


def at_cap(row: dict) -> str:
    """MUCS unlearnings that reached method.max_steps, of all the items pooled."""
    return f"{sum(values(row, 'mucs: unlearnings')):.0f} / {row['mucs_ssim']['n_items']}"


def write_table(rows: list[dict], out: Path) -> str:
    head = (
        "| folder | setting | seeds | steps | MUCS AUC SSIM (p) | MUCS AUC -MSE (p) "
        "| pixel AUC SSIM (p) | pixel AUC -MSE (p) | MUCS items needed (SSIM) "
        "| drift SSIM | fit: loss / L_null | fit: nearest share | MUCS at cap "
        "| CPU min per seed |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['folder']} | {r['setting']} | {','.join(map(str, r['seeds']))} "
        f"| {r['train_steps']} | {cell(r['mucs_ssim'])} | {cell(r['mucs_neg_mse'])} "
        f"| {cell(r.get('pixel_ssim'))} | {cell(r.get('pixel_neg_mse'))} "
        f"| {r['mucs_ssim']['items_needed'] or 'none'} | {diagnostic(r, 'drift: ssim')} "
        f"| {diagnostic(r, 'fit: F1')} | {diagnostic(r, 'fit: share')} "
        f"| {at_cap(r)} "
        f"| {r['cpu_minutes_per_seed']:.1f} |"
        for r in rows
    ]
    text = (
        "# Small natural-image folders: which knobs find the signal\n\n"
        "Measured by `scripts/folder_recipes.py` on this machine's CPU (2 cores); the "
        "folders come from `scripts/make_folders.py`. AUC against random removal, "
        "one-sided Mann-Whitney U p in brackets, seeds pooled; drift: mean SSIM of the "
        "originals to their random-removal regenerations; CPU minutes: the units' "
        "recorded wall time of MUCS against random removal for one seed (pixel's "
        "attribution, retrain and regeneration come on top).\n\n" + head + "\n".join(lines) + "\n"
    )
    io.atomic_write_text(out.with_suffix(".md"), text)
    io.atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=2))
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", type=Path, default=Path("folders"))
    parser.add_argument("--runs", type=Path, default=Path("runs_folders"))
    parser.add_argument("--folder", default="photos,faces", help="which folders, comma-separated")
    parser.add_argument("--settings", default="default", help=f"of {', '.join(SETTINGS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, pooled")
    parser.add_argument("--out", type=Path, default=Path("docs/small_folders"))
    parser.add_argument("--methods", default="mucs,pixel", help=f"of {', '.join(METHODS)}")
    parser.add_argument("--no-run", action="store_true", help="only tabulate finished runs")
    args = parser.parse_args(argv)
    names, seeds = args.settings.split(","), [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}: expected some of {', '.join(SETTINGS)}")
    if "mucs" not in methods or not set(methods) <= set(METHODS):
        parser.error(f"--methods must include mucs and be some of {', '.join(METHODS)}")
    saved = args.out.with_suffix(".json")
    previous = json.loads(saved.read_text()) if saved.exists() else []
    rows = {(r["folder"], r["setting"], tuple(r["seeds"])): r for r in previous}
    for folder in args.folder.split(","):
        if not (args.folders / folder).is_dir():
            parser.error(f"{args.folders / folder} is missing: run scripts/make_folders.py")
        for name in names:
            for seed in seeds if not args.no_run else []:
                run_pipeline(
                    overrides(args.folders, folder, SETTINGS[name], seed, args.runs), methods
                )
            row = measure(args.folders, args.runs, folder, name, seeds, methods)
            rows[folder, name, tuple(seeds)] = row
            print(write_table(list(rows.values()), args.out), flush=True)


if __name__ == "__main__":
    main()
