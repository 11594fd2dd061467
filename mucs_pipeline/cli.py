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
    from mucs_pipeline.validate import ConfigError

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
    """Check a run's config before Hydra creates its log folder, so a mistake writes nothing."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mucs_pipeline.validate import validate

        with one_line_errors():  # SystemExit: Hydra turns a callback's exceptions into warnings
            validate(config)
