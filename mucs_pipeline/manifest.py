"""A finished unit's record: manifest.json (its key, outputs and their hashes, the content
of the inputs it was made from, its metrics) and the code version that wrote it."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mucs_pipeline import artifacts as io

INPUTS = "inputs.json"  # a unit's record of the upstream content it is computed from

# The fields of a manifest that reruns rely on, with their types.
_MANIFEST = {
    "key": str,
    "outputs": dict,
    "input_hashes": (dict, type(None)),
    "metrics": dict,
    "code_version": str,
}


class MissingArtifactError(io.ArtifactError):
    """A stage needs an upstream artifact that no finished unit holds."""


class UndeclaredReadError(RuntimeError):
    """A unit read an artifact that its stage does not declare (graph.py): a program error,
    since its key and input hashes would not cover what it read."""


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
