"""Exceptions shared across linewatch. Every message names the thing at fault and what is allowed."""

from __future__ import annotations


class LinewatchError(Exception):
    """Base of linewatch's own errors; the CLI prints these without a traceback."""


class DatasetError(LinewatchError):
    """A dataset on disk is malformed: the message names the file and the problem."""


class ProfileError(LinewatchError):
    """A station profile is invalid: the message names the key, the value and what is allowed."""


class EngineError(LinewatchError):
    """An engine cannot be loaded or run (missing extra, wrong GPU, stale plan ...)."""


class UsageError(LinewatchError):
    """A command-line argument is wrong: printed without a traceback, exit status 2."""


class SettingError(LinewatchError, ValueError):
    """A value given to a library function is wrong: the message names the setting in backquotes
    (`pos_weight`), the value and what is allowed. The CLI prints the setting's option in its place."""
