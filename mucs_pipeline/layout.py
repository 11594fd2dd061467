"""Run folders, dependency keys and manifests: what lets a rerun skip finished stages."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import time
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import distributed as dist

log = logging.getLogger(__name__)

STAGES = ["pretrain", "generate", "null_loss", "attribute", "retrain", "regenerate", "evaluate"]
BASELINE = "random"  # the null attribution every method is compared against


def config_hash(*parts: Any) -> str:
    """A short hash of config subtrees and upstream keys."""
    resolved = [
        OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts
    ]
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]


def conf_dir() -> Path:
    """The Hydra config tree this process composes from (source checkout or wheel copy)."""
    from mucs_pipeline.__main__ import CONFIG_PATH

    return (Path(__file__).parent / CONFIG_PATH).resolve()


@cache  # the code a process runs is fixed when it starts: one `git` call, not one per unit
def code_version() -> str:
    try:
        pkg = version("mucs_pipeline")
    except PackageNotFoundError:
        pkg = "unknown"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{pkg}+{rev}" if rev else pkg


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temp file and os.replace (rank 0 of a multi-process job only)."""
    if not dist.is_main():
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temp file and os.replace, so a killed job leaves no half file.

    In a job of several processes only rank 0 writes (the ranks hold the same result).
    """
    if not dist.is_main():
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class UnsafeFileError(RuntimeError):
    """A file that is not plain tensors and containers: loading it could run code."""


class IntegrityError(RuntimeError):
    """An artifact differs from the content hash its manifest recorded (strict=true)."""


def load(path: Path, mmap: bool = False) -> Any:
    """Load an artifact written by this pipeline (tensors and plain containers only).

    torch's weights_only unpickler refuses anything else, such as a pickle crafted to
    call a function on load; that is reported as an UnsafeFileError naming the file.
    `mmap` maps the tensors' storage from the file instead of reading it into memory, so
    that indexing a large cached matrix reads only the rows it touches.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f"refusing to load {path}: it holds more than tensors and plain containers "
            f"(torch.load weights_only=True: {str(err).splitlines()[0]})"
        ) from None


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, per process


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered while its size and modification time do not change."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


class Layout:
    """Where each stage's artifacts live: runs/<name>/seed<seed>/<stage>/[<method>-]<key>/.

    A key hashes exactly what the stage depends on, so a run with another method reuses
    the pretrained model, the generations and the random-removal retrain.
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.root = Path(cfg.paths.runs_dir) / cfg.name / f"seed{cfg.seed}"
        self.methods = list(dict.fromkeys([cfg.method.name, BASELINE]))
        model = (cfg.dataset, cfg.model, cfg.diffusion, cfg.seed)
        self.keys: dict[tuple[str, str | None], str] = {}
        self.keys["pretrain", None] = config_hash(*model, cfg.pretrain)
        self.keys["generate", None] = config_hash(self.keys["pretrain", None], cfg.generate)
        self.keys["null_loss", None] = config_hash(*model, cfg.null_loss)

    def comparison_key(self) -> str:
        """What makes runs of different methods comparable side by side (one paper table):
        the config minus the method and the seed."""
        c = self.cfg
        return config_hash(
            c.name, c.dataset, c.model, c.diffusion, c.pretrain, c.generate, c.null_loss,
            c.retrain, c.evaluate, c.metric,
        )  # fmt: skip

    def experiment_key(self) -> str:
        """What makes runs of different seeds poolable: the config minus the seed."""
        return config_hash(self.comparison_key(), self.cfg.method)

    def method_cfg(self, method: str) -> DictConfig:
        """The config of `method`: the selected one, or the defaults of its file in
        conf/method/ (random, an ensemble's components), with an ensemble's `overrides`."""
        if method == self.cfg.method.name:
            return self.cfg.method
        path = conf_dir() / "method" / f"{method}.yaml"
        if not path.exists():
            raise ValueError(f"method {method!r}: no config file {path}")
        defaults = OmegaConf.load(path)
        overrides = self.cfg.method.get("overrides") or {}
        if method in overrides:
            defaults = OmegaConf.merge(defaults, overrides[method])
        # Resolved against the run config, for interpolations such as ${paths.weights_dir}.
        run = OmegaConf.to_container(self.cfg, resolve=False)
        run["method"] = OmegaConf.to_container(defaults, resolve=False)
        return OmegaConf.create(OmegaConf.to_container(OmegaConf.create(run).method, resolve=True))

    def components(self, method: str) -> list[str]:
        """The methods whose scores an ensemble method combines (none for other methods)."""
        cfg = self.method_cfg(method)
        if cfg.get("kind", cfg.name) != "ensemble":
            return []
        return [name for name, w in cfg.weights.items() if w]

    def key(self, stage: str, method: str | None = None) -> str:
        if (stage, method) in self.keys:
            return self.keys[stage, method]
        cfg = self.cfg
        if stage == "attribute":
            k = config_hash(
                self.key("generate"),
                self.key("null_loss"),
                self.method_cfg(method),
                cfg.pretrain,
                cfg.trainer.bf16_scoring,  # scoring precision changes the scores
                *[self.key("attribute", c) for c in self.components(method)],
            )
        elif stage == "retrain":
            k = config_hash(
                self.key("attribute", method),
                self.key("pretrain"),
                cfg.evaluate.k_fraction,
                cfg.retrain,
            )
        elif stage == "regenerate":
            k = config_hash(self.key("retrain", method), self.key("generate"))
        elif stage == "evaluate":
            k = config_hash(
                [self.key("regenerate", m) for m in self.methods], cfg.metric, cfg.evaluate
            )
        else:
            raise KeyError(stage)
        self.keys[stage, method] = k
        return k

    def dir(self, stage: str, method: str | None = None) -> Path:
        per_method = stage in ("attribute", "retrain", "regenerate")
        name = f"{method}-{self.key(stage, method)}" if per_method else self.key(stage, method)
        if stage == "evaluate":
            name = f"{self.cfg.method.name}-{name}"
        return self.root / stage / name

    def manifest(self, stage: str, method: str | None = None) -> dict | None:
        """The manifest of a finished unit whose config and inputs still match, else None.

        Inputs match when every upstream artifact has the content hash recorded when this
        unit ran: a recomputed upstream stage invalidates what was built from it.
        """
        manifest = self._finished(stage, method)
        if manifest is None or manifest.get("input_hashes") != self.input_hashes(stage, method):
            return None
        return manifest

    def _finished(self, stage: str, method: str | None) -> dict | None:
        """The unit's manifest if its key matches and its outputs exist."""
        path = self.dir(stage, method) / "manifest.json"
        if not path.exists():
            return None
        manifest = json.loads(path.read_text())
        if manifest.get("key") != self.key(stage, method):
            return None
        d = path.parent
        outputs = manifest.get("outputs", {})
        if not all((d / name).exists() for name in outputs):
            return None
        changed = [name for name, sha in outputs.items() if file_sha256(d / name) != sha]
        if changed:
            what = f"{', '.join(changed)} in {d}"
            if self.cfg.get("strict", False):
                raise IntegrityError(
                    f"{what} changed since its manifest was written (truncated or altered); "
                    "strict=true stops here: delete the folder or rerun without strict"
                )
            log.warning("%s changed since its manifest was written: recomputing", what)
            return None
        return manifest

    def require(self, stage: str, method: str | None = None) -> Path:
        """The folder of a finished upstream stage, or an error saying what to run."""
        if self.manifest(stage, method) is None:
            what = f"{stage} ({method})" if method else stage
            raise FileNotFoundError(
                f"stage {what} has no finished artifact at {self.dir(stage, method)}; "
                f"run it first, e.g. stages=[{stage}] or the full pipeline"
            )
        return self.dir(stage, method)

    def run_unit(
        self,
        stage: str,
        method: str | None,
        work: Callable[[Path], dict],
        distributed: bool = False,
    ) -> dict:
        """Run `work(folder) -> metrics` unless a matching manifest exists; then write one.

        In a job of several processes, rank 0 decides and writes; `distributed` work (it
        splits itself through Lightning) runs on every rank, other work on rank 0 only.
        """
        what = f"{stage}[{method}]" if method else stage
        folder = self.dir(stage, method)
        lock = FileLock(folder.parent / f".{folder.name}.lock")
        done = None
        if dist.is_main():
            done = None if self.cfg.force else self.manifest(stage, method)
            if done is None:
                # Sweep jobs that share a unit (one F1 for every lambda) run it once: the
                # others wait here, then find its manifest. The OS drops a killed job's lock.
                folder.parent.mkdir(parents=True, exist_ok=True)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    log.info("waiting for %s: another job is computing it", what)
                    lock.acquire()
                done = None if self.cfg.force else self.manifest(stage, method)
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
                if self.cfg.force and folder.exists():
                    # Checkpoints and finished items would otherwise be resumed.
                    shutil.rmtree(folder)
                folder.mkdir(parents=True, exist_ok=True)
            dist.barrier()  # the folder exists for every rank
            metrics = None
            if distributed or dist.is_main():
                metrics = self._run_locked(stage, method, what, folder, work)
            dist.barrier()  # rank 0 has written the outputs and the manifest
            return dist.broadcast(metrics)
        finally:
            if dist.is_main():
                lock.release()

    def _run_locked(
        self, stage: str, method: str | None, what: str, folder: Path, work: Callable
    ) -> dict | None:
        log.info("run %s -> %s", what, folder)
        start = time.time()
        metrics = work(folder)
        wall = time.time() - start
        if not dist.is_main():
            return None
        outputs = {
            p.name: file_sha256(p)
            for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
        }
        manifest = {
            "stage": stage,
            "method": method,
            "key": self.key(stage, method),
            "inputs": {
                f"{s}[{m}]" if m else s: self.key(s, m) for s, m in self.upstream(stage, method)
            },
            "input_hashes": self.input_hashes(stage, method),
            "code_version": code_version(),
            "wall_time_s": round(wall, 3),
            "outputs": outputs,
            "metrics": metrics,
        }
        atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2))
        log.info("done %s in %.1f s", what, wall)
        return metrics

    def upstream(self, stage: str, method: str | None) -> list[tuple[str, str | None]]:
        """The (stage, method) units whose artifacts `stage` reads."""
        if stage == "attribute":
            components = [("attribute", c) for c in self.components(method)]
            return [("generate", None), ("null_loss", None), ("pretrain", None), *components]
        return {
            "pretrain": [],
            "generate": [("pretrain", None)],
            "null_loss": [],
            "retrain": [("attribute", method)],
            "regenerate": [("retrain", method), ("generate", None)],
            "evaluate": [("regenerate", m) for m in self.methods] + [("generate", None)],
        }[stage]

    def input_hashes(self, stage: str, method: str | None) -> dict[str, dict[str, str]] | None:
        """The output hashes of every upstream unit as they are now (None if one is missing)."""
        hashes = {}
        for s, m in self.upstream(stage, method):
            upstream = self._finished(s, m)
            if upstream is None:
                return None
            hashes[f"{s}[{m}]" if m else s] = upstream["outputs"]
        return hashes
