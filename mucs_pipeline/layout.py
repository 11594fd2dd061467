"""Run folders, unit keys and the check of finished units: what lets a rerun skip work."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import keys, method_config
from mucs_pipeline.constants import BASELINE
from mucs_pipeline.graph import STAGE, Unit
from mucs_pipeline.manifest import (
    INPUTS,
    MissingArtifactError,
    UndeclaredReadError,
    read_manifest,
)


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
        self.running: Unit | None = None  # the unit whose work runs now (see `reading`)
        self._reported: set[Path] = set()  # damaged files already reported

    def comparison_key(self) -> str:
        return keys.comparison_key(self.cfg)

    def experiment_key(self) -> str:
        return keys.experiment_key(self.cfg)

    def method_cfg(self, method: str) -> DictConfig:
        return method_config.method_cfg(self.cfg, method)

    def components(self, method: str) -> list[str]:
        return method_config.components(self.cfg, method)

    def bf16_scores(self, method: str) -> bool:
        return method_config.bf16_scores(self.cfg, method)

    def units(self, stage: str) -> list[str | None]:
        """The methods of a stage's units, in the order they run (None: a shared unit)."""
        return STAGE[stage].units(self)

    def upstream(self, stage: str, method: str | None) -> list[Unit]:
        """The units whose artifacts `stage` reads, as the graph declares them."""
        return [u for read in STAGE[stage].reads for u in read.units(self, method)]

    def key(self, stage: str, method: str | None = None) -> str:
        if (stage, method) not in self.keys:
            self.keys[stage, method] = io.config_hash(*STAGE[stage].key(self, method))
        return self.keys[stage, method]

    def dir(self, stage: str, method: str | None = None) -> Path:
        prefix = STAGE[stage].prefix(self, method)
        key = self.key(stage, method)
        return self.root / stage / (f"{prefix}-{key}" if prefix else key)

    def relative(self, path: Path) -> str:
        return io.runs_relative(self.runs_dir, path)

    def name(self, stage: str, method: str | None = None) -> str:
        """How the log names a unit."""
        return f"{stage}[{method}]" if method else stage

    @contextmanager
    def reading(self, stage: str, method: str | None):
        """While the block runs, the unit (stage, method) is the one at work: `require` and
        `manifest` then give it only the units its stage declares."""
        outer, self.running = self.running, (stage, method)
        try:
            yield
        finally:
            self.running = outer

    def _check_declared(self, stage: str, method: str | None) -> None:
        if self.running is None or (stage, method) == self.running:
            return
        if (stage, method) not in self.upstream(*self.running):
            raise UndeclaredReadError(
                f"{self.name(*self.running)} read {self.name(stage, method)}, which its stage "
                f"does not declare; add it to the stage's reads in graph.py"
            )

    def manifest(self, stage: str, method: str | None = None) -> dict | None:
        """The manifest of a finished unit whose config and inputs still match, else None.

        Inputs match when every upstream artifact has the content hash recorded when this
        unit ran: a recomputed upstream stage invalidates what was built from it.
        """
        self._check_declared(stage, method)
        manifest = self._finished(stage, method)
        if manifest is None or manifest["input_hashes"] != self.input_hashes(stage, method):
            return None
        return manifest

    def require(self, stage: str, method: str | None = None) -> Path:
        """The folder of a finished upstream stage, or an error saying what to run."""
        if self.manifest(stage, method) is None:
            what = f"{stage} ({method})" if method else stage
            raise MissingArtifactError(
                f"stage {what} has no finished artifact at {self.dir(stage, method)}; "
                f"run it first, e.g. stages=[{stage}] or the full pipeline"
            )
        return self.dir(stage, method)

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
        return "resume" if partial and not self.changed_inputs(folder, inputs) else "run"

    def changed_inputs(self, folder: Path, inputs: dict | None) -> str | None:
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

    def input_hashes(self, stage: str, method: str | None) -> dict[str, dict[str, str]] | None:
        """The output hashes of every upstream unit as they are now (None if one is missing)."""
        hashes = {}
        for s, m in self.upstream(stage, method):
            upstream = self._finished(s, m)
            if upstream is None:
                return None
            hashes[f"{s}[{m}]" if m else s] = upstream["outputs"]
        return hashes
