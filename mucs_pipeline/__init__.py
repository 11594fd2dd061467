"""mucs_pipeline: training data attribution for diffusion models, proven by retraining."""

from pathlib import Path

# The top-level conf/ of a source checkout, or the copy shipped inside the wheel.
_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"


def conf_dir() -> Path:
    """The Hydra config tree this process composes from (source checkout or wheel copy)."""
    if (_SOURCE_CONF / "config.yaml").exists():
        return _SOURCE_CONF
    return Path(__file__).resolve().parent / "conf"
