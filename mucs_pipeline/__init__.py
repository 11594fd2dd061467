"""mucs_pipeline: training data attribution for diffusion models, proven by retraining."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

# The top-level conf/ of a source checkout, or the copy shipped inside the wheel.
_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"


def conf_dir() -> Path:
    """The Hydra config tree this process composes from (source checkout or wheel copy)."""
    if (_SOURCE_CONF / "config.yaml").exists():
        return _SOURCE_CONF
    return Path(__file__).resolve().parent / "conf"


def config_dirs(cfg: DictConfig) -> list[Path]:
    """The config folders a run composes from: conf/, then those added with
    `hydra.searchpath=[file://...]` (where a method's own config file may live)."""
    from hydra.core.hydra_config import HydraConfig

    runtime = cfg.hydra.runtime if "hydra" in cfg else None  # before the job: its config
    if runtime is None and HydraConfig.initialized():
        runtime = HydraConfig.get().runtime
    sources = runtime.config_sources if runtime is not None else []
    dirs = [conf_dir(), *[Path(s.path) for s in sources if s.schema == "file"]]
    return list(dict.fromkeys(dirs))
