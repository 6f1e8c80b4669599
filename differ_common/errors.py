"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class DifferError(Exception):
    """A problem with the user's input or files; the message names the file and the fix."""

    exit_code = 2


class ConfigError(DifferError):
    """An invalid configuration key or value."""


class DataError(DifferError):
    """A dataset, manifest or table that does not match its contract."""
