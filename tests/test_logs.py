"""Logging (`linewatch.logs`): a log line that cannot be written never raises into a pipeline thread."""

from __future__ import annotations

import io

from linewatch.logs import configure, get_logger


def test_logging_to_a_closed_stream_never_raises():
    stream = io.StringIO()
    configure("json", stream=stream)
    log = get_logger("t")
    log.warning("first")
    assert "first" in stream.getvalue()
    stream.close()
    log.warning("second")  # would raise ValueError: I/O operation on closed file
    log.exception("third")
    configure("json")  # back to stdout for later tests
