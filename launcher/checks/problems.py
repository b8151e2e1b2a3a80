"""What a check reports into: ``Problems`` collects every error line and warning of one preflight.

A check is ``check_x(problems, cfg)``: it appends lines, or raises a LauncherError for its one problem; either
way the checks after it still run, so one round trip shows the user every problem.
"""
from __future__ import annotations

from typing import Callable

from launcher.errors import LauncherError


class Problems:
    def __init__(self) -> None:
        self.errors: list = []
        self.warnings: list = []
        self.config_valid = True

    def check(self, fn: Callable, *args) -> None:
        """Run one check; a LauncherError it raises becomes one error line (later checks still run)."""
        try:
            fn(self, *args)
        except LauncherError as exc:
            self.errors.append(str(exc))
        except Exception:
            # A value already reported as out of range can break a later check (a zero divisor, a negative
            # size); the user has the line that matters. With a valid config, such an error is a bug: raise.
            if self.config_valid:
                raise
