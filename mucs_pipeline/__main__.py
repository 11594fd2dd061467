"""`python -m mucs_pipeline [overrides]`: the whole attribution pipeline as a Hydra app."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

# The top-level conf/ of a source checkout, or the copy shipped inside the wheel.
_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"
CONFIG_PATH = "../conf" if (_SOURCE_CONF / "config.yaml").exists() else "conf"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    from mucs_pipeline.pipeline import run
    from mucs_pipeline.validate import ConfigError

    try:
        run(cfg)
    except ConfigError as err:
        print("\n".join(["invalid config:", *err.problems]), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
