"""Errors that several layers raise: a leaf module, so that raising one imports nothing."""

from __future__ import annotations


class ConfigError(ValueError):
    """One or more config violations, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(problems))
