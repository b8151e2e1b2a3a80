"""Errors a user can cause. Each message says what is wrong, where (file, line, key) and what to do."""


class LauncherError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class ConfigError(LauncherError):
    """A config key is unknown, mistyped, or combined impossibly with another."""


class DataError(LauncherError):
    """A dataset file or row is unreadable or malformed."""


class PreflightError(LauncherError):
    """A run that would fail after waiting in a queue; refused before submission."""


class SubmitError(LauncherError):
    """The scheduler did not take the job (sbatch refused it, or SLURM did not answer): its one-line reason."""
