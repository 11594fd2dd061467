"""A quiet terminal: each warning once, progress bars on a terminal and plain lines in a log.

A progress bar written to a file (SLURM, `make run > log`) is one long line of carriage
returns; when the output is not a terminal, progress is a line at most every
`PLAIN_EVERY_S` seconds instead.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterable, Iterator

log = logging.getLogger("mucs_pipeline.progress")

PLAIN_EVERY_S = 30.0  # seconds between two progress lines when output is not a terminal
_SEEN: set[tuple] = set()
_ORIGINAL_SHOW = warnings.showwarning


def _show_once(message, category, filename, lineno, file=None, line=None) -> None:
    # Lightning and torch reset the warning registries (catch_warnings), so the same
    # deprecation would print once per Trainer; key on the text instead.
    key = (category, str(message))
    if key not in _SEEN:
        _SEEN.add(key)
        _ORIGINAL_SHOW(message, category, filename, lineno, file, line)


def warnings_once() -> None:
    """Show each distinct warning once per process."""
    warnings.showwarning = _show_once


def is_terminal() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """`12.3 s`, `4 min 05 s`, `2 h 03 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """tqdm's bar on a terminal; otherwise a plain line at most every PLAIN_EVERY_S seconds
    (`attribute mucs: 5/20 (25%), 1 min 02 s, ~3 min 06 s left`). Off with enabled=False."""

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "item"):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.start = self.last = time.perf_counter()
        self.bar = None
        self.plain = enabled and not is_terminal()
        if enabled and is_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.plain and (now := time.perf_counter()) - self.last >= PLAIN_EVERY_S:
            self.last = now
            log.info(self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}s"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%), {duration(elapsed)}"
            if 0 < self.n < self.total:
                text += f", ~{duration(elapsed * (self.total - self.n) / self.n)} left"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress(iterable: Iterable, total: int, desc: str, enabled: bool = True) -> Iterator:
    """Iterate with a Progress."""
    bar = Progress(total, desc, enabled)
    try:
        for x in iterable:
            yield x
            bar.update()
    finally:
        bar.close()


def line_progress_callback(desc: str):
    """A Lightning callback printing plain progress lines (for output that is not a terminal)."""
    from lightning.pytorch.callbacks import Callback

    class LineProgress(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            self.bar = Progress(trainer.max_steps, desc, unit="step")
            self.bar.n = trainer.global_step  # a resumed run

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.bar.update(trainer.global_step - self.bar.n)

    return LineProgress()
