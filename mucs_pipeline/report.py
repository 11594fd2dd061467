"""`python -m mucs_pipeline.report <runs dir>`: pool the items of every seed of an experiment.

The paper pools 6 runs x 20 items. This finds every finished evaluate stage under the
folder, groups them by experiment (the config minus the seed), concatenates their
per-item similarities and writes pooled results.csv / results.md per group under
`<runs dir>/report/<name>-<method>-<experiment key>/`.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from mucs_pipeline import layout as io
from mucs_pipeline.stages.evaluate import result_rows, write_tables


def find_runs(root: Path) -> dict[tuple[str, str, str], list[Path]]:
    """Finished evaluate folders under root, grouped by (name, method, experiment key)."""
    groups: dict[tuple[str, str, str], dict[int, Path]] = defaultdict(dict)
    for info_path in sorted(root.rglob("evaluate/*/run.json")):
        folder = info_path.parent
        if not (folder / "manifest.json").exists():
            continue  # unfinished
        info = json.loads(info_path.read_text())
        groups[info["name"], info["method"], info["experiment_key"]][info["seed"]] = folder
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


def report(root: Path, alpha: float = 0.01) -> list[Path]:
    """Write the pooled tables of every experiment under root; return their folders."""
    written = []
    for (name, method, key), folders in find_runs(root).items():
        sims = pool(folders)
        metrics = list(next(iter(sims.values()))[method])
        infos = [json.loads((f / "run.json").read_text()) for f in folders]
        removed = {m: sum(i["removed"][m] for i in infos) for m in infos[0]["removed"]}
        rows = result_rows(method, sims, metrics, alpha, removed)
        out = root / "report" / f"{name}-{method}-{key}"
        out.mkdir(parents=True, exist_ok=True)
        table = write_tables(rows, out)
        seeds = [i["seed"] for i in infos]
        io.atomic_write_text(out / "runs.json", json.dumps([str(f) for f in folders], indent=2))
        print(f"\n{name} / {method}: {len(folders)} runs (seeds {seeds}) pooled -> {out}\n{table}")
        written.append(out)
    if not written:
        raise SystemExit(f"no finished evaluate stage under {root}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="a runs folder (paths.runs_dir) or part of it")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level")
    args = parser.parse_args()
    report(args.runs_dir, args.alpha)


if __name__ == "__main__":
    main()
