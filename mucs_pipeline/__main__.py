"""`python -m mucs_pipeline [overrides]`: the whole attribution pipeline as a Hydra app."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import conf_dir
from mucs_pipeline.cli import one_line_errors


def _log_dir(plan: bool, print_config: bool, folder: str) -> str:
    """Hydra's log folder: under the runs folder, or for plan=true and print_config=true
    (which write nothing there) the temporary folder."""
    nothing_written = plan or print_config
    return str(Path(tempfile.gettempdir()) / "mucs_pipeline-plan") if nothing_written else folder


OmegaConf.register_new_resolver("log_dir", _log_dir, replace=True)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def app(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mucs_pipeline import tracking
    from mucs_pipeline.pipeline import run

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    tracking.set_job(
        hydra_cfg.runtime.choices, Path(hydra_cfg.sweep.dir).name if multirun else None
    )
    with one_line_errors():
        metrics = run(cfg, hydra_cfg.overrides.task)
    if multirun and "evaluate" in metrics:  # for the multirun's combined table (cli.py)
        from mucs_pipeline.cli import write_job_summary

        write_job_summary(cfg, hydra_cfg, metrics["evaluate"])
    return metrics


def _show_prepared(argv: list[str]) -> list[str]:
    """`--cfg job` (`-c job`) as `print_config=true`: the prepared config, what will run
    (method_settings, prompts, epochs applied), rather than Hydra's composed one.
    `--cfg hydra` and `--cfg all` stay Hydra's."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--cfg", "-c") and argv[i + 1 : i + 2] == ["job"]:
            out.append("print_config=true")
            i += 2
        elif argv[i] == "--cfg=job":
            out.append("print_config=true")
            i += 1
        else:
            out.append(argv[i])
            i += 1
    if "print_config=true" in out:
        out = [a for a in out if a != "--resolve"]  # the prepared config is printed resolved
    return out


def main() -> None:
    """The command line: Hydra's app, where a user's mistake is one line and exit status 2."""
    # Hydra prints its own errors (an unknown key or option) and exits with 1; with
    # HYDRA_FULL_ERROR it raises them instead, for one_line_errors to report.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.argv = [sys.argv[0], *_show_prepared(sys.argv[1:])]
    with one_line_errors():
        app()


if __name__ == "__main__":
    main()
