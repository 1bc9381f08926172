"""Write a text file whole or not at all: the one way linewatch replaces a file others read.

`write_text(path, text)` writes `text` (UTF-8) to a temporary file in `path`'s folder, flushes and fsyncs
it, and renames it over `path` (`os.replace`, atomic on one file system). So a reader — a daemon applying
a profile on SIGHUP, a second `ablate` sitting sharing an `out`, a user's editor — sees the old file or the
new one, never half of one; a process killed mid-write leaves the old file; nothing is left behind on an
error (the temporary file is removed and the error raised). The temporary name is unique per call
(process id and a random token), so processes and threads writing the same path never share one. A file
that exists keeps its permission bits; a new one gets the mode `open()` gives (0o666 less the umask).

Binary files with their own reader contract (`record/images.py`: `.part` names its readers skip) and
torch checkpoints (`model/train.py: save_atomic`) keep their own writers.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_text(path: str | Path, text: str) -> None:
    """`text` into `path` atomically (module doc). OSError as the file system gives it."""
    path = Path(path)
    try:
        mode: int | None = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None  # a new file: the umask applies, as for open()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
