"""structlog configuration: one JSON object per line on pipes (journald, log shippers), colourful
console rendering on a terminal.

Every record carries `timestamp` (ISO 8601 UTC), `level`, `event` and the bound context
(`station`, `camera` ...). Call `configure()` once, early, then `get_logger(__name__)`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error")


class SafePrintLogger(structlog.PrintLogger):
    """A PrintLogger that never raises: a log line that cannot be written (closed or broken stdout)
    is lost, never the pipeline thread that logged it, nor the frame it was handling."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):
            pass

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure(fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None) -> str:
    """Configure structlog for the process. Returns the format chosen ("json" or "console")."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: must be one of {', '.join(LEVELS)}")
    out = stream if stream is not None else sys.stdout
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # without an explicit stream, sys.stdout is looked up per logger, not frozen here
        logger_factory=lambda *_: SafePrintLogger(stream if stream is not None else sys.stdout),
        cache_logger_on_first_use=False,
    )
    return fmt


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger with `logger=name` and the given context bound."""
    log = structlog.get_logger()
    if name:
        log = log.bind(logger=name)
    return log.bind(**context) if context else log
