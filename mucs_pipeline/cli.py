"""The command line's contract for mistakes: one line on stderr and exit status 2.

An invalid config, an unknown key or option, a file that cannot be used as input or as
an artifact, a folder that cannot be written: each is reported as what is wrong and
what to do, before any compute where it can be known then, never as a traceback.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def explain(err: Exception) -> list[str] | None:
    """The lines that report a user's mistake, or None for an error of the program."""
    from hydra.errors import CompactHydraException

    from mucs_pipeline.artifacts import ArtifactError
    from mucs_pipeline.data.base import DatasetError
    from mucs_pipeline.errors import ConfigError

    if isinstance(err, ConfigError):
        return ["invalid config:", *err.problems]
    if isinstance(err, (ArtifactError, DatasetError)):
        return [str(err)]
    if isinstance(err, CompactHydraException):  # an unknown key, option or override syntax
        return [" ".join(line.strip() for line in str(err).splitlines() if line.strip())]
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return [
            f"{err.filename}: {err.strerror}; expected folders this user can write "
            "(paths.runs_dir) and read (dataset.root)"
        ]
    return None


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Report a user's mistake raised inside the block (see `explain`) and exit with 2."""
    try:
        yield
    except Exception as err:
        lines = explain(err)
        if lines is None:
            raise
        print("\n".join(lines), file=sys.stderr)
        sys.exit(2)


class ValidateFirst(Callback):
    """Prepare a run's config (config.prepare, which validates it) before Hydra creates its
    log folder, so a mistake writes nothing; the run then finds it prepared."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mucs_pipeline.config import prepare

        with one_line_errors():  # SystemExit: Hydra turns a callback's exceptions into warnings
            prepare(config, config.hydra.overrides.task)


JOB_SUMMARY = "auc.json"  # in each multirun job's Hydra folder: its AUCs, for the combined table


def write_job_summary(cfg: DictConfig, hydra_cfg: Any, evaluate: dict) -> None:
    """The job's overrides and target AUCs (and p) in its Hydra output folder."""
    import json
    from pathlib import Path

    label = cfg.method.name + (f"/{cfg.ablation.name}" if cfg.get("ablation") else "")
    summary = {
        "job": int(hydra_cfg.job.num),
        "overrides": list(hydra_cfg.overrides.task),
        "method": label,
        "seed": int(cfg.seed),
        "results": {k: v for k, v in evaluate.items() if k.startswith("target/")},
    }
    path = Path(hydra_cfg.runtime.output_dir) / JOB_SUMMARY
    path.write_text(json.dumps(summary, indent=1))


def combined_table(sweep_dir) -> str | None:
    """One Markdown table of every finished job's target AUCs (p), by the overrides that
    differ between the jobs; None when no job finished its evaluation."""
    import json
    from pathlib import Path

    jobs = []
    for path in Path(sweep_dir).glob(f"*/{JOB_SUMMARY}"):
        try:
            jobs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not jobs:
        return None
    jobs.sort(key=lambda j: j["job"])
    common = set.intersection(*(set(j["overrides"]) for j in jobs))
    metrics = list(dict.fromkeys(k.split("/")[1] for j in jobs for k in j["results"]))
    lines = [
        "| job | overrides | method | seed | " + " | ".join(f"AUC {m} (p)" for m in metrics) + " |",
        "|" + "---|" * (4 + len(metrics)),
    ]
    for j in jobs:
        varying = " ".join(o for o in j["overrides"] if o not in common) or "-"
        cells = []
        for m in metrics:
            auc, p = j["results"].get(f"target/{m}/auc"), j["results"].get(f"target/{m}/p_value")
            cells.append("-" if auc is None else f"{auc:.3f} ({p:.2g})")
        lines.append(
            f"| {j['job']} | {varying} | {j['method']} | {j['seed']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


class MultirunSummary(Callback):
    """At the end of a multirun, one table of every job's AUCs (rather than one per job)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import time

        self.start = time.perf_counter()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import time

        from mucs_pipeline.terminal import duration

        table = combined_table(config.hydra.sweep.dir)
        if table:
            n = table.count("\n") - 2
            print(f"\nAll {n} jobs of this multirun, target items against random removal "
                  f"({config.hydra.sweep.dir}):\n{table}")  # fmt: skip
        if hasattr(self, "start"):
            print(f"multirun done in {duration(time.perf_counter() - self.start)}")
