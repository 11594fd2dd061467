"""W&B runs as a researcher filters them: one per stage unit, named, tagged and grouped.

Every run carries the full resolved config; its name says the stage, method, ablation,
lambda and seed; its tags say dataset, method, ablation, seed, sweep and experiment; its
group is the comparison (the runs that differ only in method and seed); its job type is
the stage. Runs are offline by default and `python -m mucs_pipeline.report RUNS --sync`
uploads them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io
from mucs_pipeline import distributed as dist
from mucs_pipeline.attribution.base import method_class
from mucs_pipeline.keys import comparison_key

# Hydra's group choices of this job (experiment, sweep, ...), set by the command line.
_CHOICES: dict[str, str] = {}
_SWEEP: str | None = None  # the multirun's folder name, when this job is part of one


def set_job(choices: dict[str, Any], sweep: str | None = None) -> None:
    """Record the command line's group choices and multirun, for tags."""
    global _SWEEP
    _CHOICES.clear()
    _CHOICES.update({k: str(v) for k, v in choices.items() if v is not None})
    _SWEEP = sweep


def enabled(cfg: DictConfig) -> bool:
    return cfg.logger.name == "wandb"


def _own_settings(cfg: DictConfig) -> dict[str, str]:
    """The ablation and the method's own sweep keys (MUCS's lambda): what tells a sweep's
    runs apart."""
    out = {}
    if cfg.get("ablation"):
        out["ablation"] = cfg.ablation.name
    for key in method_class(cfg.method).sweep_keys:
        if key in cfg.method:
            value = cfg.method[key]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            out[key] = f"{value:g}" if number else str(value)
    return out


def method_label(cfg: DictConfig, method: str | None) -> str | None:
    """The method as the name shows it: `mucs-u_c1_lam01-lam0.1`, `pixel`, `random`."""
    if method is None:
        return None
    own = _own_settings(cfg) if method == cfg.method.name else {}
    return "-".join([method, *[v if k == "ablation" else f"{k}{v}" for k, v in own.items()]])


def tags(cfg: DictConfig, stage: str, method: str | None) -> list[str]:
    """`key:value` tags to filter by: dataset, method, ablation, seed, sweep, experiment."""
    out = [f"dataset:{cfg.dataset.name}", f"seed:{cfg.seed}", f"stage:{stage}"]
    shown = method or cfg.method.name  # a shared stage belongs to the job's method
    out.append(f"method:{shown}")
    if shown == cfg.method.name:
        out += [f"{k}:{v}" for k, v in _own_settings(cfg).items()]
    for group in ("experiment", "sweep"):
        if group in _CHOICES:
            out.append(f"{group}:{_CHOICES[group]}")
    if _SWEEP and "sweep" not in _CHOICES:
        out.append(f"sweep:{_SWEEP}")
    out += [str(t) for t in cfg.logger.get("tags") or []]
    return [t[:64] for t in out]  # W&B's limit


def identity(cfg: DictConfig, stage: str, method: str | None, folder: Path) -> dict:
    """wandb.init's name, group, job type, tags and config for one stage unit."""
    label = method_label(cfg, method)
    key = folder.name.rsplit("-", 1)[-1][:6]  # unique per unit config, short enough to read
    name = "-".join(p for p in (cfg.name, stage, label, f"seed{cfg.seed}", key) if p)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["unit"] = {
        "stage": stage,
        "method": method,
        "folder": io.runs_relative(cfg.paths.runs_dir, folder),
    }
    config["choices"] = dict(_CHOICES)
    return {
        "project": cfg.logger.project,
        "name": name,
        "group": f"{cfg.name}-{comparison_key(cfg)[:8]}",
        "job_type": stage,
        "tags": tags(cfg, stage, method),
        "config": config,
    }


def start(run: dict, mode: str, folder: Path, verbose: bool = False):
    """wandb.init as every W&B run of this package starts: `run` (see `identity`), its
    files under `folder`, W&B's banners off unless `verbose` (they are most of a run's
    terminal lines)."""
    if not verbose:
        os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    return wandb.init(
        **run,
        mode=mode,
        dir=str(folder),
        reinit="finish_previous",
        settings=wandb.Settings(silent=not verbose),
    )


def init(cfg: DictConfig, stage: str, method: str | None, folder: Path):
    """A W&B run for one stage unit (offline unless `logger.mode`), or None without W&B."""
    if not enabled(cfg):
        return None
    run = identity(cfg, stage, method, folder)
    return start(run, cfg.logger.mode, folder, cfg.logger.get("verbose", False))


def lightning_logger(cfg: DictConfig, stage: str, method: str | None, folder: Path):
    """Lightning's logger of a training unit's W&B run (`init`), started by rank 0 alone."""
    from lightning.pytorch.loggers import WandbLogger

    run = init(cfg, stage, method, folder) if dist.is_main() else None
    if run is not None:  # Lightning's x-axis, as its logger sets for a run it starts
        run.define_metric("trainer/global_step")
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return WandbLogger(experiment=run, save_dir=str(folder))


def offline_runs(root: Path, include_synced: bool = False) -> list[Path]:
    """Every offline W&B run folder under root, not yet synced unless `include_synced`."""
    runs = []
    for folder in sorted(root.rglob("offline-run-*")):
        logs = list(folder.glob("run-*.wandb"))
        if not folder.is_dir() or not logs:
            continue
        synced = all(p.with_name(p.name + ".synced").exists() for p in logs)
        if include_synced or not synced:
            runs.append(folder)
    return runs


def sync(root: Path, dry_run: bool = False) -> list[Path]:
    """Upload every offline run under root that is not synced yet (`wandb sync`)."""
    runs = offline_runs(root)
    print(f"{len(runs)} offline W&B run(s) to sync under {root}")
    for folder in runs:
        print(f"  {folder}")
    if runs and not dry_run:
        wandb_cli = [sys.executable, "-m", "wandb", "sync"]
        subprocess.run([*wandb_cli, *map(str, runs)], check=True)
    return runs
