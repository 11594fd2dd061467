"""Run one stage unit: skip it when finished, else one job computes it (a file lock
between sweep jobs, rank 0 of a distributed job) and writes its manifest."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from mucs_pipeline import artifacts as io
from mucs_pipeline import distributed as dist
from mucs_pipeline.layout import Layout
from mucs_pipeline.manifest import INPUTS, code_version

log = logging.getLogger(__name__)


def run_unit(
    layout: Layout,
    stage: str,
    method: str | None,
    work: Callable[[Path], dict],
    distributed: bool = False,
) -> dict:
    """Run `work(folder) -> metrics` unless a matching manifest exists; then write one.

    In a job of several processes, rank 0 decides and writes; `distributed` work (it
    splits itself through Lightning) runs on every rank, other work on rank 0 only.
    """
    cfg = layout.cfg
    what = layout.name(stage, method)
    folder = layout.dir(stage, method)
    lock = FileLock(folder.parent / f".{folder.name}.lock")
    done = None
    if dist.is_main():
        done = None if cfg.force else layout.manifest(stage, method)
        if done is None:
            # Sweep jobs that share a unit (one F1 for every lambda) run it once: the
            # others wait here, then find its manifest. The OS drops a killed job's lock.
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("waiting for %s: another job is computing it", what)
                lock.acquire()
            done = None if cfg.force else layout.manifest(stage, method)
            if done is not None:
                lock.release()
    done = dist.broadcast(done)
    if done is not None:
        log.info("skip %s: finished at %s", what, folder)
        if done.get("code_version") != (now := code_version()):
            # Keys hash the configuration, not the code: say when a result predates it.
            log.warning(
                "%s was computed by mucs_pipeline %s, this is %s; force=true recomputes it",
                what,
                done.get("code_version"),
                now,
            )
        return done["metrics"]
    try:
        if dist.is_main():
            _prepare(layout, stage, method, what, folder)
        dist.barrier()  # the folder exists for every rank
        metrics = None
        if distributed or dist.is_main():
            metrics = _run(layout, stage, method, what, folder, work)
        dist.barrier()  # rank 0 has written the outputs and the manifest
        return dist.broadcast(metrics)
    finally:
        if dist.is_main():
            lock.release()


def _prepare(layout: Layout, stage: str, method: str | None, what: str, folder: Path) -> None:
    """Ready the unit's folder: keep what a killed run left for the same upstream content
    (checkpoints, finished items), discard anything else, record the inputs."""
    for s, m in layout.upstream(stage, method):
        layout.require(s, m)
    inputs = layout.input_hashes(stage, method)
    if folder.exists():
        if layout.cfg.force:
            shutil.rmtree(folder)  # checkpoints and finished items would be resumed
        elif changed := layout.changed_inputs(folder, inputs):
            # A resume must never continue from a checkpoint made for other inputs.
            log.info("recompute %s from scratch: %s", what, changed)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(folder / INPUTS, json.dumps(inputs, indent=2))


def _run(
    layout: Layout, stage: str, method: str | None, what: str, folder: Path, work: Callable
) -> dict | None:
    log.info("run %s -> %s", what, folder)
    start = time.time()
    with layout.reading(stage, method):  # the work may read only what the stage declares
        metrics = work(folder)
    # Lightning's trainer and module hold reference cycles, so a finished unit's model,
    # optimizer state and EMA would live until the next full collection: at DiT/B size
    # each retrain would add ~3 GB (measured on coco_mucs). Free them now.
    gc.collect()
    wall = time.time() - start
    if not dist.is_main():
        return None
    outputs = {
        p.name: io.file_sha256(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in ("manifest.json", INPUTS) and p.name[0] != "."
    }
    upstream = layout.upstream(stage, method)
    manifest = {
        "stage": stage,
        "method": method,
        "key": layout.key(stage, method),
        "inputs": {f"{s}[{m}]" if m else s: layout.key(s, m) for s, m in upstream},
        "input_hashes": layout.input_hashes(stage, method),
        "code_version": code_version(),
        "wall_time_s": round(wall, 3),
        "outputs": outputs,
        "metrics": metrics,
    }
    io.atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2))
    log.info("done %s in %.1f s", what, wall)
    return metrics
