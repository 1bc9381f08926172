"""Replace a file whole or not at all: the one way linewatch rewrites a file that something else reads
(a profile the daemon reloads on SIGHUP, a manifest, a TensorRT plan and its sidecar, an ablation's
results that a second sitting may read).

`write_text(path, text)` (UTF-8) and `write_bytes(path, data)`:
- write to a temporary file in the target's folder, fsync it, rename it over the target (`os.replace`,
  atomic on one file system) and fsync the folder: a reader sees the old file or the new one, never half of
  one; a process killed mid-write leaves the old file; after a power cut the file is the old or the new one.
- A symlink is followed: its target is replaced, the link stays (`os.path.realpath`).
- A file that exists keeps its permission bits and, where the writer may set them (root, or its owner for
  a group it belongs to), its owner and group — a profile `root:linewatch 0640` written by root stays
  readable by the daemon. Where the group cannot be kept, the new file gets no group or other access
  (mode & 0o700) rather than handing it to another group. The temporary file is 0600 from its creation
  until then, so new contents are never more readable than the old. ACLs and extended attributes are not
  copied. A new file gets the mode `open()` gives (0o666 less the umask).
- The temporary name is unique per call (`.<name>.<pid>.<random>.tmp`), so processes and threads writing one
  path never share it; the last rename wins (no locking: a caller that reads, changes and writes a file
  does so on its own account). On an error the temporary file is removed and the error raised; only a kill
  mid-write can leave one behind, and no reader's pattern matches that name.

Record images keep their own writer (`record/images.py`: `.part` names its readers skip, and no fsync per
image on the recorder's thread); `tests/test_atomicfile.py` checks that no other code renames files by hand.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_text(path: str | Path, text: str) -> None:
    """`text` (UTF-8) into `path` atomically (module doc). OSError as the file system gives it."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """`data` into `path` atomically (module doc). OSError as the file system gives it."""
    target = Path(os.path.realpath(path))
    try:
        st: os.stat_result | None = target.stat()
    except FileNotFoundError:
        st = None  # a new file: the umask applies, as for open()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if st is not None else 0o666)
        if st is not None:
            mode = st.st_mode & 0o7777
            if not _keep_owner(fd, st):
                mode &= 0o700
            os.fchmod(fd, mode)  # after chown, which clears set-id bits
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        fd, closing = -1, fd
        os.close(closing)
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def _keep_owner(fd: int, st: os.stat_result) -> bool:
    """The old file's owner and group on the new one, as far as this process may set them: whether the
    group is the old one now (the owner, when it cannot be kept, is the writer, who could write it anyway)."""
    now = os.fstat(fd)  # not the euid/egid: a setgid folder gives its own group
    if (now.st_uid, now.st_gid) == (st.st_uid, st.st_gid):
        return True
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
    except PermissionError:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, st.st_gid)  # not root: the group still, when the writer belongs to it
    return os.fstat(fd).st_gid == st.st_gid


def _sync_folder(folder: Path) -> None:
    """fsync the folder so the rename itself survives a power cut (best effort: not every file system can)."""
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)
