"""The recorder: the publisher's hook that journals every decision and keeps the images that matter.

    rec = Recorder(profile.archive, station="line-3", profile_sha256=sha)
    rec.start(session)                 # the writer thread; never raises for the archive's own faults
    rec.record(decision, seq, reject_seq, image, masks)   # from Publisher.submit: never blocks
    rec.event("reload", thresholds=[...])                 # the audit trail
    rec.status()                       # the heartbeat's `archive`: ok / degraded, with counts
    rec.stop()                         # writes what is queued (bounded), closes

`record` runs on the inference worker's thread and does three cheap things: it decides whether the
frame is kept (every reject; every `pass_every`-th pass, 0 = none), copies a kept frame and its masks
into a free slot of a preallocated pool (`pool` slots, allocated at the first image; none free or
another shape -> the row is kept without an image, counted `images_skipped`), and puts one item in a
bounded queue (`queue_size`; full -> the row is lost, counted `rows_lost`). It never waits.

The writer thread (`linewatch-recorder`) takes what is queued, writes the kept frames
(`linewatch.record.images`) and inserts the rows and events in one transaction at least every
`COMMIT_S` seconds (`linewatch.record.journal`). Rotation runs every `ROTATE_S` s: rows and images older
than `keep_days`, then, while the images exceed `max_gb`, the oldest pass images, then the oldest
reject images (their rows stay, with `image` NULL); each round that deletes is an event.

Faults of the archive (a full disk, a read-only folder, a locked or broken database, an image that
cannot be written) never reach the caller: they are counted and logged, and the state is "degraded"
until `RECOVER_S` s pass without a new fault ("archive" events mark both edges). Inspection goes on.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from linewatch.record import images as img
from linewatch.record.journal import Journal

if TYPE_CHECKING:
    from linewatch.pipeline.decide import Decision
    from linewatch.profile import ArchiveConfig

COMMIT_S = 0.25
"""Longest time a queued row waits for its transaction (what a SIGKILL can lose, plus the queue)."""
BATCH_MAX = 4096
"""Most rows per transaction."""
ROTATE_S = 30.0
"""How often rotation looks at ages and sizes."""
RECOVER_S = 5.0
"""Seconds without a fault after which a degraded archive is "ok" again."""
RETRY_S = 2.0
"""How often the writer tries to open a journal it could not open."""
EVENTS_KEPT = 1000
"""Events held for a journal that cannot be written (the oldest go first)."""
STOP_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Row:
    decision: Decision
    seq: int
    reject_seq: int
    slot: int
    profile_sha256: str


@dataclass(slots=True)
class _Event:
    t_ns: int
    kind: str
    detail: dict[str, Any]


_STOP = object()

WRITER_NICE = 10
"""The writer thread's nice value (Linux: per thread): the engine's threads come first, the record takes
what CPU is left; under a sustained overload its queue and image pool absorb the difference."""


def _lower_priority() -> None:
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the process's priority
        pass


class Recorder:
    """The station record's writer for one archive folder (module doc)."""

    def __init__(self, config: ArchiveConfig, station: str, *, profile_sha256: str = "", queue_size: int = 50_000,
                 pool: int = 32, log: Any = None, clock: Any = time.time_ns,
                 write_frame: Any = img.write_frame, journal: Any = Journal) -> None:
        self.config = config
        self.root = Path(config.dir)
        self.station = station
        self.profile_sha256 = profile_sha256
        """Sha256 of the profile deciding now (the daemon sets it again on reload)."""
        self.session = ""
        self.log = log
        self._clock = clock
        self._write_frame = write_frame
        self._journal_factory = journal
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._pool_n = int(pool)
        self._frames: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._free: collections.deque[int] = collections.deque()
        self._pool_lock = threading.Lock()
        self._passes = 0
        self._thread: threading.Thread | None = None
        self._journal: Journal | None = None
        self._events: collections.deque[_Event] = collections.deque(maxlen=EVENTS_KEPT)
        self._images_bytes = 0
        self._last_fault_ns = 0
        self._degraded = False
        self.last_error: str | None = None
        self.counters = {"rows": 0, "images": 0, "rows_lost": 0, "images_failed": 0, "write_errors": 0,
                         "events": 0, "rotated_images": 0, "rotated_rows": 0}
        """Written by the writer thread only."""
        self.hook_counters = {"queue_full": 0, "images_skipped": 0}
        """Written by `record` only (one thread each: no lock needed)."""

    # -- the hook (inference worker's thread) ---------------------------------------------------------
    def record(self, decision: Decision, seq: int, reject_seq: int = -1, image: np.ndarray | None = None,
               masks: np.ndarray | None = None) -> None:
        """Queue one decision's row, and its frame when it is kept (module doc). Never blocks or raises."""
        slot = -1
        if image is not None and self._keeps(decision.reject):
            slot = self._copy(image, masks)
        try:
            self._queue.put_nowait(_Row(decision, int(seq), int(reject_seq), slot, self.profile_sha256))
        except queue.Full:
            self.hook_counters["queue_full"] += 1
            self._fault("the record's queue is full: the journal does not keep up")
            if slot >= 0:
                self._free.append(slot)

    def event(self, kind: str, **detail: Any) -> None:
        """Queue an audit event (`linewatch.record.journal.EVENT_KINDS`)."""
        try:
            self._queue.put_nowait(_Event(int(self._clock()), kind, detail))
        except queue.Full:
            self._events.append(_Event(int(self._clock()), kind, detail))

    def _keeps(self, reject: bool) -> bool:
        if reject:
            return True
        every = self.config.pass_every
        if every <= 0:
            return False
        self._passes += 1
        return self._passes % every == 0

    def _copy(self, image: np.ndarray, masks: np.ndarray | None) -> int:
        if self._frames is None:
            with self._pool_lock:
                if self._frames is None:
                    self._masks = (np.empty((self._pool_n, *masks.shape), np.float32)
                                   if masks is not None and self.config.masks else None)
                    self._frames = np.empty((self._pool_n, *image.shape), np.uint8)
                    self._free.extend(range(self._pool_n))
        if image.shape != self._frames.shape[1:]:
            self.hook_counters["images_skipped"] += 1
            return -1
        try:
            slot = self._free.popleft()
        except IndexError:
            self.hook_counters["images_skipped"] += 1
            return -1
        np.copyto(self._frames[slot], image)
        if self._masks is not None:
            if masks is not None and masks.shape == self._masks.shape[1:]:
                np.copyto(self._masks[slot], masks)
            else:
                self._masks[slot].fill(0.0)
        return slot

    def _fault(self, why: str) -> None:
        self._last_fault_ns = time.monotonic_ns()
        self.last_error = why

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, session: str) -> Recorder:
        """Start the writer thread for `session` (the publisher's session id)."""
        self.session = session
        self._thread = threading.Thread(target=self._run, name="linewatch-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Write what is queued (within `timeout`), then close the journal."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        """The heartbeat's `archive`: state ("ok" | "degraded"), the counters, the queue's depth."""
        out: dict[str, Any] = {"state": "degraded" if self._is_degraded() else "ok", **self.counters,
                               **self.hook_counters, "queued": self._queue.qsize()}
        if self.last_error is not None:
            out["last_error"] = self.last_error
        return out

    def _is_degraded(self) -> bool:
        return self._last_fault_ns != 0 and time.monotonic_ns() - self._last_fault_ns < RECOVER_S * 1e9

    # -- the writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        _lower_priority()
        next_open = 0.0
        next_rotate = 0.0
        stopping = False
        while not stopping:
            now = time.monotonic()
            if self._journal is None and now >= next_open:
                self._open()
                next_open = now + RETRY_S
            items, stopping = self._collect()
            try:
                self._write(items)
                if self._journal is not None and time.monotonic() >= next_rotate:
                    self._rotate()
                    next_rotate = time.monotonic() + ROTATE_S
            except Exception as exc:  # a bug here must not end the record: count it, go on
                self.counters["rows_lost"] += sum(isinstance(it, _Row) for it in items)
                self._error("archive_failed", exc)
            self._edge()
        try:
            self._write([])  # the events of the last round (rotation, state edges)
        except Exception as exc:
            self._error("archive_failed", exc)
        if self._journal is not None:
            self._journal.close()

    def _collect(self) -> tuple[list[Any], bool]:
        """Items queued for one transaction: the first (waiting up to COMMIT_S), then what comes within
        COMMIT_S of it, at most BATCH_MAX. True with them when the stop sentinel came."""
        items: list[Any] = []
        try:
            first = self._queue.get(timeout=COMMIT_S)
        except queue.Empty:
            return items, False
        if first is _STOP:
            return items, True
        items.append(first)
        deadline = time.monotonic() + COMMIT_S
        while len(items) < BATCH_MAX:
            left = deadline - time.monotonic()
            try:
                it = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if it is _STOP:
                return items, True
            items.append(it)
        return items, False

    def _open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._journal = self._journal_factory(self.root)
            removed = img.remove_partial(self.root)
            if removed and self.log is not None:
                self.log.warning("archive_partial_images_removed", dir=str(self.root), files=removed,
                                 note=f"*{img.PARTIAL} files a writer killed mid-write left; no row named them")
            self._images_bytes = img.folder_bytes(self.root)
        except Exception as exc:  # the archive's fault: degraded, never the caller's
            self._journal = None
            self._error("archive_open_failed", exc)

    def _error(self, event: str, exc: BaseException) -> None:
        self.counters["write_errors"] += 1
        self._fault(f"{type(exc).__name__}: {exc}")
        if self.log is not None and self.counters["write_errors"] <= 10:
            self.log.error(event, dir=str(self.root), error=self.last_error)

    def _write(self, items: list[Any]) -> None:
        rows: list[tuple[Any, ...]] = []
        for it in items:
            if isinstance(it, _Event):
                self._events.append(it)
                continue
            rows.append(self._row(it))
        if not rows and not self._events:
            return
        if self._journal is None:
            self.counters["rows_lost"] += len(rows)
            return
        events = [(e.t_ns, self.session, self.station, e.kind, e.detail) for e in self._events]
        try:
            self._journal.write(rows, events)
        except Exception as exc:
            self.counters["rows_lost"] += len(rows)
            self._error("archive_write_failed", exc)
            return
        self.counters["rows"] += len(rows)
        self.counters["events"] += len(events)
        self._events.clear()

    def _row(self, it: _Row) -> tuple[Any, ...]:
        d = it.decision
        rel: str | None = None
        if it.slot >= 0 and self._frames is not None:
            rel = img.frame_path(d.camera, self.session, d.frame_id, d.t_decision_ns, self.config.format)
            try:
                masks = self._masks[it.slot] if self._masks is not None else None
                self._images_bytes += self._write_frame(self.root, rel, self._frames[it.slot], masks,
                                                        quality=self.config.quality)
                self.counters["images"] += 1
            except Exception as exc:
                self.counters["images_failed"] += 1
                self._error("archive_image_failed", exc)
                rel = None
            finally:
                self._free.append(it.slot)
        a, h = d.scores if d.scores is not None else (None, None)
        return (self.session, self.station, d.camera, int(d.frame_id), it.seq,
                it.reject_seq if it.reject_seq >= 0 else None, int(d.t_capture_ns), int(d.t_decision_ns), a, h,
                float(d.thresholds[0]), float(d.thresholds[1]), d.rule, "reject" if d.reject else "pass",
                "+".join(d.reasons), int(d.failsafe), d.model, it.profile_sha256, rel)

    def _edge(self) -> None:
        """An "archive" event when the state changes (degraded <-> ok)."""
        degraded = self._is_degraded()
        if degraded != self._degraded:
            self._degraded = degraded
            detail = {"state": "degraded", "error": self.last_error} if degraded else {"state": "ok"}
            self._events.append(_Event(int(self._clock()), "archive", detail))
            if self.log is not None:
                (self.log.warning if degraded else self.log.info)(
                    "archive_degraded" if degraded else "archive_recovered", dir=str(self.root),
                    **({"error": self.last_error} if degraded else {}), **self.counters)

    def _rotate(self) -> None:
        j = self._journal
        assert j is not None
        cfg = self.config
        deleted_images = deleted_rows = freed = 0
        try:
            if cfg.keep_days > 0:
                cutoff = int(self._clock()) - int(cfg.keep_days * 86400 * 1e9)
                old = j.images_before(cutoff)
                for _, rel in old:
                    freed += img.remove_frame(self.root, rel)
                deleted_images += len(old)
                deleted_rows += j.delete_before(cutoff)
            limit = int(cfg.max_gb * 1e9)
            if limit > 0 and self._images_bytes - freed > limit:
                target = int(0.9 * limit)
                for kind in ("pass", "reject"):  # passes go first, oldest first
                    while self._images_bytes - freed > target:
                        batch = j.oldest_images(kind, 200)
                        if not batch:
                            break
                        done: list[int] = []
                        for row_id, rel in batch:
                            if self._images_bytes - freed <= target:
                                break
                            freed += img.remove_frame(self.root, rel)
                            done.append(row_id)
                        j.forget_images(done)
                        deleted_images += len(done)
        except Exception as exc:
            self._error("archive_rotation_failed", exc)
        self._images_bytes = max(0, self._images_bytes - freed)
        if deleted_images or deleted_rows:
            img.remove_empty_dirs(self.root)
            self.counters["rotated_images"] += deleted_images
            self.counters["rotated_rows"] += deleted_rows
            self._events.append(_Event(int(self._clock()), "rotation", {
                "images_deleted": deleted_images, "rows_deleted": deleted_rows, "bytes_freed": freed,
                "images_bytes": self._images_bytes, "max_gb": cfg.max_gb, "keep_days": cfg.keep_days}))
