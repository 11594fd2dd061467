"""The stage graph, run folders, keys and manifests: what lets a rerun skip finished work."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io
from mucs_pipeline import config_dirs
from mucs_pipeline import distributed as dist
from mucs_pipeline.attribution.base import method_class
from mucs_pipeline.method_settings import with_method_settings
from mucs_pipeline.prompts import generate_recipe
from mucs_pipeline.weights import pretrain_recipe

log = logging.getLogger(__name__)

BASELINE = "random"  # the null attribution every method is compared against
INPUTS = "inputs.json"  # a unit's record of the upstream content it is computed from
Unit = tuple[str, "str | None"]  # (stage, method); method None for a stage shared by all


@dataclass(frozen=True)
class Stage:
    """One stage of the graph. Each callable takes the Layout and a unit's method.

    `key`: what the unit's key hashes (its config and the keys it is built from), so that
    another method reuses every unit it shares with an earlier run; `reads`: the units
    whose artifacts it reads; `units`: its units in order; `prefix`: its folder name's
    prefix, before the key.
    """

    name: str
    key: Callable[[Layout, str | None], tuple]
    reads: Callable[[Layout, str | None], list[Unit]]
    units: Callable[[Layout], list[str | None]] = lambda lay: [None]
    prefix: Callable[[Layout, str | None], str | None] = lambda lay, method: method


def _model(lay: Layout) -> tuple:
    c = lay.cfg
    return (c.dataset, c.model, c.diffusion, c.seed)


def _attributed(lay: Layout) -> list[str | None]:
    """Every method's unit, an ensemble's components first (shared with runs of them)."""
    return list(dict.fromkeys(u for m in lay.methods for u in [*lay.components(m), m]))


GRAPH = (
    Stage(
        "pretrain",
        key=lambda lay, m: (*_model(lay), pretrain_recipe(lay.cfg)),
        reads=lambda lay, m: [],
    ),
    Stage(
        "generate",
        key=lambda lay, m: (lay.key("pretrain"), generate_recipe(lay.cfg)),
        reads=lambda lay, m: [("pretrain", None)],
    ),
    Stage(
        "null_loss", key=lambda lay, m: (*_model(lay), lay.cfg.null_loss), reads=lambda lay, m: []
    ),
    Stage(
        "attribute",
        key=lambda lay, m: (
            lay.key("generate"),
            lay.key("null_loss"),
            lay.method_cfg(m),
            pretrain_recipe(lay.cfg),
            lay.bf16_scores(m),
            *[lay.key("attribute", c) for c in lay.components(m)],
        ),
        reads=lambda lay, m: [
            ("generate", None),
            ("null_loss", None),
            ("pretrain", None),
            *[("attribute", c) for c in lay.components(m)],
        ],
        units=_attributed,
    ),
    Stage(
        "retrain",
        key=lambda lay, m: (
            lay.key("attribute", m),
            lay.key("pretrain"),
            lay.cfg.evaluate.k_fraction,
            lay.cfg.retrain,
        ),
        reads=lambda lay, m: [("attribute", m)],
        units=lambda lay: lay.methods,
    ),
    Stage(
        "regenerate",
        key=lambda lay, m: (lay.key("retrain", m), lay.key("generate")),
        reads=lambda lay, m: [("retrain", m), ("generate", None)],
        units=lambda lay: lay.methods,
    ),
    Stage(
        "evaluate",
        key=lambda lay, m: (
            [lay.key("regenerate", x) for x in lay.methods],
            lay.cfg.metric,
            lay.cfg.evaluate,
        ),
        reads=lambda lay, m: [*[("regenerate", x) for x in lay.methods], ("generate", None)],
        prefix=lambda lay, m: lay.cfg.method.name,  # one evaluation per evaluated method
    ),
)
STAGES = [stage.name for stage in GRAPH]
_GRAPH = {stage.name: stage for stage in GRAPH}


class MissingArtifactError(io.ArtifactError):
    """A stage needs an upstream artifact that no finished unit holds."""


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


# The fields of a manifest that reruns rely on, with their types.
_MANIFEST = {
    "key": str,
    "outputs": dict,
    "input_hashes": (dict, type(None)),
    "metrics": dict,
    "code_version": str,
}


def read_manifest(path: Path) -> dict:
    """A unit's manifest.json; DamagedFileError when it is not the JSON a run writes."""
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise io.DamagedFileError(path, f"not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise io.DamagedFileError(path, f"a JSON {type(manifest).__name__}, not an object")
    wrong = [k for k, t in _MANIFEST.items() if not isinstance(manifest.get(k), t)]
    if not wrong and not all(isinstance(v, str) for v in manifest["outputs"].values()):
        wrong = ["outputs"]
    if wrong:
        raise io.DamagedFileError(path, f"missing or mistyped fields {wrong}")
    return manifest


class Layout:
    """Where each unit's artifacts live: runs/<name>/seed<seed>/<stage>/[<prefix>-]<key>/.

    A unit is one stage for one method (or for all, for a shared stage). Its key hashes
    exactly what it depends on, so a run with another method reuses the pretrained
    model, the generations and the random-removal retrain.
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.runs_dir = Path(cfg.paths.runs_dir)
        self.root = self.runs_dir / cfg.name / f"seed{cfg.seed}"
        self.methods = list(dict.fromkeys([cfg.method.name, BASELINE]))
        self.keys: dict[Unit, str] = {}
        self._reported: set[Path] = set()  # damaged files already reported

    def comparison_key(self) -> str:
        """What makes runs of different methods comparable side by side (one paper table):
        the config minus the method and the seed."""
        c = self.cfg
        return io.config_hash(
            c.name, c.dataset, c.model, c.diffusion, pretrain_recipe(c), generate_recipe(c),
            c.null_loss, c.retrain, c.evaluate, c.metric,
        )  # fmt: skip

    def experiment_key(self) -> str:
        """What makes runs of different seeds poolable: the config minus the seed, and the
        scoring precision where it changes the method's scores (float32 keys as before)."""
        bf16 = [True] if self.bf16_scores(self.cfg.method.name) else []
        return io.config_hash(self.comparison_key(), self.cfg.method, *bf16)

    def method_cfg(self, method: str) -> DictConfig:
        """The config of `method`: the selected one, or the defaults of its file in a
        method/ folder of the config path (conf/method/ and any `hydra.searchpath`
        folder: random, an ensemble's components), with `method_settings` and an
        ensemble's `overrides`."""
        if method == self.cfg.method.name:
            return self.cfg.method
        folders = [d / "method" for d in config_dirs(self.cfg)]
        paths = [p for d in folders if (p := d / f"{method}.yaml").exists()]
        if not paths:
            where = ", ".join(map(str, folders))
            raise ValueError(f"method {method!r}: no config file {method}.yaml in {where}")
        defaults = OmegaConf.load(paths[0])
        overrides = self.cfg.method.get("overrides") or {}
        defaults = with_method_settings(defaults, self.cfg.get("method_settings"))
        if method in overrides:
            defaults = OmegaConf.merge(defaults, overrides[method])
        # Resolved against the run config, for interpolations such as ${paths.weights_dir}.
        run = OmegaConf.to_container(self.cfg, resolve=False)
        run["method"] = OmegaConf.to_container(defaults, resolve=False)
        return OmegaConf.create(OmegaConf.to_container(OmegaConf.create(run).method, resolve=True))

    def components(self, method: str) -> list[str]:
        """The methods whose scores an ensemble method combines (none for other methods)."""
        cfg = self.method_cfg(method)
        return method_class(cfg).components(cfg)

    def bf16_scores(self, method: str) -> bool:
        """Whether `method`'s scores are computed under trainer.bf16_scoring: it is on and
        they are network losses, the method's own or an ensemble component's."""
        if not self.cfg.trainer.bf16_scoring:
            return False
        own = method_class(self.method_cfg(method)).bf16_scoring
        return own or any(self.bf16_scores(c) for c in self.components(method))

    def units(self, stage: str) -> list[str | None]:
        """The methods of a stage's units, in the order they run (None: a shared unit)."""
        return _GRAPH[stage].units(self)

    def upstream(self, stage: str, method: str | None) -> list[Unit]:
        """The units whose artifacts `stage` reads."""
        return _GRAPH[stage].reads(self, method)

    def key(self, stage: str, method: str | None = None) -> str:
        if (stage, method) not in self.keys:
            self.keys[stage, method] = io.config_hash(*_GRAPH[stage].key(self, method))
        return self.keys[stage, method]

    def dir(self, stage: str, method: str | None = None) -> Path:
        prefix = _GRAPH[stage].prefix(self, method)
        key = self.key(stage, method)
        return self.root / stage / (f"{prefix}-{key}" if prefix else key)

    def relative(self, path: Path) -> str:
        """`path` relative to the runs folder: what run.json stores, so that the folder can move."""
        return path.relative_to(self.runs_dir).as_posix()

    def manifest(self, stage: str, method: str | None = None) -> dict | None:
        """The manifest of a finished unit whose config and inputs still match, else None.

        Inputs match when every upstream artifact has the content hash recorded when this
        unit ran: a recomputed upstream stage invalidates what was built from it.
        """
        manifest = self._finished(stage, method)
        if manifest is None or manifest["input_hashes"] != self.input_hashes(stage, method):
            return None
        return manifest

    def _finished(self, stage: str, method: str | None) -> dict | None:
        """The unit's manifest if its key matches and its outputs are intact."""
        path = self.dir(stage, method) / "manifest.json"
        if not path.exists():
            return None
        try:
            manifest = read_manifest(path)
        except io.DamagedFileError as err:
            self._damaged(path, err.why)
            return None
        if manifest["key"] != self.key(stage, method):
            return None
        d = path.parent
        outputs = manifest["outputs"]
        if not all((d / name).exists() for name in outputs):
            return None
        for name, sha in outputs.items():
            if io.file_sha256(d / name) != sha:
                self._damaged(d / name, "changed since its manifest was written: cut or altered")
                return None
        return manifest

    def _damaged(self, path: Path, why: str) -> None:
        """A damaged artifact of a unit, which is therefore computed again (said once)."""
        if path not in self._reported:
            io.damaged(path, why, self.cfg.get("strict", False))
            self._reported.add(path)

    def name(self, stage: str, method: str | None = None) -> str:
        """How the log names a unit."""
        return f"{stage}[{method}]" if method else stage

    def require(self, stage: str, method: str | None = None) -> Path:
        """The folder of a finished upstream stage, or an error saying what to run."""
        if self.manifest(stage, method) is None:
            what = f"{stage} ({method})" if method else stage
            raise MissingArtifactError(
                f"stage {what} has no finished artifact at {self.dir(stage, method)}; "
                f"run it first, e.g. stages=[{stage}] or the full pipeline"
            )
        return self.dir(stage, method)

    def state(self, stage: str, method: str | None) -> str:
        """What a run does with a unit: skip it (finished), resume it (a killed run left
        partial results for the same inputs) or run it."""
        if self.cfg.force:
            return "run"
        if self.manifest(stage, method) is not None:
            return "skip"
        folder = self.dir(stage, method)
        partial = folder.exists() and any(p.name != INPUTS for p in folder.iterdir())
        inputs = self.input_hashes(stage, method)
        return "resume" if partial and not self._changed_inputs(folder, inputs) else "run"

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
        what = self.name(stage, method)
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
                self._prepare(stage, method, what, folder)
            dist.barrier()  # the folder exists for every rank
            metrics = None
            if distributed or dist.is_main():
                metrics = self._run_locked(stage, method, what, folder, work)
            dist.barrier()  # rank 0 has written the outputs and the manifest
            return dist.broadcast(metrics)
        finally:
            if dist.is_main():
                lock.release()

    def _prepare(self, stage: str, method: str | None, what: str, folder: Path) -> None:
        """Ready the unit's folder: keep what a killed run left for the same upstream
        content (checkpoints, finished items), discard anything else, record the inputs."""
        for s, m in self.upstream(stage, method):
            self.require(s, m)
        inputs = self.input_hashes(stage, method)
        if folder.exists():
            if self.cfg.force:
                shutil.rmtree(folder)  # checkpoints and finished items would be resumed
            elif changed := self._changed_inputs(folder, inputs):
                # A resume must never continue from a checkpoint made for other inputs.
                log.info("recompute %s from scratch: %s", what, changed)
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        io.atomic_write_text(folder / INPUTS, json.dumps(inputs, indent=2))

    def _changed_inputs(self, folder: Path, inputs: dict | None) -> str | None:
        """Why the partial results in `folder` were made from other inputs, or None."""
        try:
            recorded = json.loads((folder / INPUTS).read_text())
        except FileNotFoundError:
            if any(folder.iterdir()):
                return "no record of the inputs its partial results were made from"
            return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"its {INPUTS} is unreadable"
        if recorded == inputs:
            return None
        if not isinstance(recorded, dict) or inputs is None:
            return "its inputs changed"
        changed = sorted(u for u in {*recorded, *inputs} if recorded.get(u) != inputs.get(u))
        return f"its input {', '.join(changed)} changed"

    def _run_locked(
        self, stage: str, method: str | None, what: str, folder: Path, work: Callable
    ) -> dict | None:
        log.info("run %s -> %s", what, folder)
        start = time.time()
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
        io.atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2))
        log.info("done %s in %.1f s", what, wall)
        return metrics

    def input_hashes(self, stage: str, method: str | None) -> dict[str, dict[str, str]] | None:
        """The output hashes of every upstream unit as they are now (None if one is missing)."""
        hashes = {}
        for s, m in self.upstream(stage, method):
            upstream = self._finished(s, m)
            if upstream is None:
                return None
            hashes[f"{s}[{m}]" if m else s] = upstream["outputs"]
        return hashes
