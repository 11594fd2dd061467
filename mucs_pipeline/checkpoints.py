"""Lightning checkpoints handled like every other artifact: written atomically, read safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins import TorchCheckpointIO

from mucs_pipeline import artifacts as io


class ArtifactCheckpointIO(TorchCheckpointIO):
    """Checkpoints through a temporary file beside the target and os.replace.

    Lightning's own save stages a checkpoint in the system temp folder and moves it into
    place, which is a copy when that folder is on another disk (a cluster node's /tmp):
    a full disk then left a cut `last.ckpt` that every later run failed to load.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        io.atomic_save(checkpoint, path)

    def load_checkpoint(self, path: str | Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The checkpoint, checked and read with the weights_only unpickler (`artifacts.load`)."""
        return io.load(Path(path))
