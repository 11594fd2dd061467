"""`python -m mucs_pipeline [overrides]`: the whole attribution pipeline as a Hydra app."""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from mucs_pipeline import conf_dir
from mucs_pipeline.cli import one_line_errors


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def app(cfg: DictConfig) -> None:
    from mucs_pipeline.pipeline import run

    with one_line_errors():
        run(cfg)


def main() -> None:
    """The command line: Hydra's app, where a user's mistake is one line and exit status 2."""
    # Hydra prints its own errors (an unknown key or option) and exits with 1; with
    # HYDRA_FULL_ERROR it raises them instead, for one_line_errors to report.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    with one_line_errors():
        app()


if __name__ == "__main__":
    main()
