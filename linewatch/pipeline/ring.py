"""The frame ring: preallocated slots between the acquisition threads and the inference worker.

Frames are numbers in preallocated buffers. The ring owns

* `images`        uint8 [S, H, W, 3]  the pixels (RGB, the model's input size). Allocated once, by
                  the `alloc(shape, dtype)` callable the caller passes (page-locked host memory
                  when the engine runs on a GPU) or by numpy; never reallocated.
* `camera`        int16 [S]           camera index (the daemon's order of cameras)
* `frame_id`      int64 [S]           per-camera frame counter
* `t_capture_ns`  int64 [S]           capture time, `time.time_ns()` (epoch nanoseconds)
* `truth`         int8  [S, 2]        ground truth (anomaly, adhesive), -1 = unknown
* `status`        uint8 [S]           FREE, CLAIMED, COMMITTED, TAKEN, VOID

Producers (one acquisition thread per camera, any number of them) do::

    slot = ring.claim()                    # None when the ring is full
    if slot is None:
        ring.drop(cam, fid, t, DROP_FULL, truth)
    else:
        write pixels into ring.images[slot]
        ring.commit(slot, cam, fid, t, truth)            # or, when the frame turned out corrupt:
        ring.drop(cam, fid, t, DROP_CORRUPT, truth, slot=slot)

The single consumer (the inference worker) does::

    batch = ring.take(max_n, timeout)      # up to max_n frames in consecutive slots + drop records
    ... infer batch.images, decide every frame and every drop record ...
    ring.release(batch)

Ordering: frames come out FIFO in claim order. A batch never wraps around the end of the slot
array, so `batch.images` is one contiguous view the engine can take as is; a backlog that wraps
comes out as two batches. A slot claimed but not yet committed holds back the frames claimed
after it (producers claim right before they write, so this lasts a copy/resize).

Full-ring policy: **drop newest.** When every slot is in use, `claim()` returns None and the
producer reports the incoming frame with `drop(..., DROP_FULL)`; frames already waiting keep
their place. The drop record still flows to the consumer with the next `take`, so the dropped
frame gets a decision: a fail-safe reject (the inference worker maps each DROP_* code to its decision
reason, `linewatch.pipeline.infer.reason_of`; the ring only numbers and names the codes).

Drop records live in their own preallocated ring (`drop_capacity` records, default
max(65536, 4 × S): 24 bytes a record, 1.5 MB). `drop` never blocks. The record ring overflows only
when producers drop more frames than it holds between two `take` calls: a dead or wedged inference
worker, or cameras far faster than the engine during one long batch (with the default, 65536 drops
inside one batch). Records that do not fit are counted in `counters.lost_records` (frames without
a decision; the daemon's watchdog treats a consumer that stops consuming as a fault of its own).

Threading: one `threading.Condition` guards the indices and the metadata; producers and the
consumer hold it for a few index updates only, never while pixels are copied. `take` waits on
the condition (no busy spinning); `commit`, `drop` and `close` notify it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

# --- reason codes of drop records (small ints; 0 = none) -------------------------------------
DROP_NONE = 0
DROP_FULL = 1
"""No free slot: the ring was full when the frame arrived (drop newest)."""
DROP_CORRUPT = 2
"""The frame could not be decoded / converted (wrong size, truncated buffer, unreadable file)."""
DROP_LOST = 3
"""The camera numbered a frame that never reached the host (transport loss, buffer underrun)."""
DROP_LATE = 4
"""Reserved for the consumer: a frame it could not infer within the deadline."""
DROP_ENGINE_ERROR = 5
"""Reserved for the consumer: the engine raised on the frame's batch."""

DROP_NAMES: dict[int, str] = {
    DROP_FULL: "full",
    DROP_CORRUPT: "corrupt",
    DROP_LOST: "lost",
    DROP_LATE: "late",
    DROP_ENGINE_ERROR: "engine-error",
}
"""Short names of the reason codes (logs, counters); its keys are the valid codes."""


# --- slot states ------------------------------------------------------------------------------
FREE = 0
CLAIMED = 1
COMMITTED = 2
TAKEN = 3
VOID = 4
"""Claimed, then given up by the producer (`drop(..., slot=slot)`): skipped by the consumer."""

UNKNOWN_TRUTH: tuple[int, int] = (-1, -1)

Allocator = Callable[[tuple[int, ...], np.dtype], np.ndarray]
"""`alloc(shape, dtype) -> ndarray`, e.g. a page-locked host allocator of a GPU engine."""


@dataclass(slots=True)
class RingCounters:
    """A snapshot of the ring's counters (monotonic since the ring was made)."""

    committed: int = 0
    """Frames committed by producers."""
    taken: int = 0
    """Frames handed to the consumer."""
    dropped_full: int = 0
    """Drop records with DROP_FULL (no free slot: drop newest)."""
    dropped_corrupt: int = 0
    """Drop records with DROP_CORRUPT."""
    dropped_other: int = 0
    """Drop records with any other reason code (DROP_LOST, ...)."""
    lost_records: int = 0
    """Drop records that did not fit the drop-record ring (only when the consumer stopped consuming)."""
    max_occupancy: int = 0
    """Highest number of slots in use at once (claimed, committed or taken)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class Batch:
    """What one `take` hands the consumer. Every array is a view into the ring, valid until `release`.

    Frames: `n` frames in slots `start .. start + n - 1` (never wraps). Drop records: `n_drops`
    records, in the order they were reported.
    """

    start: int
    n: int
    images: np.ndarray
    """uint8 [n, H, W, 3], contiguous."""
    camera: np.ndarray
    """int16 [n]"""
    frame_id: np.ndarray
    """int64 [n]"""
    t_capture_ns: np.ndarray
    """int64 [n]"""
    truth: np.ndarray
    """int8 [n, 2], -1 = unknown"""
    n_drops: int
    drop_camera: np.ndarray
    """int16 [n_drops]"""
    drop_frame_id: np.ndarray
    """int64 [n_drops]"""
    drop_t_capture_ns: np.ndarray
    """int64 [n_drops]"""
    drop_reason: np.ndarray
    """uint8 [n_drops], DROP_* codes (`linewatch.pipeline.infer.reason_of(code)` -> decide.REASON_*)."""
    drop_truth: np.ndarray
    """int8 [n_drops, 2]"""
    _seq: int = 0
    _drop_seq: int = 0
    _released: bool = False

    def __len__(self) -> int:
        return self.n

    @property
    def empty(self) -> bool:
        """True when the batch holds neither frames nor drop records (take timed out)."""
        return self.n == 0 and self.n_drops == 0

    def drops(self) -> Iterator[tuple[int, int, int, int, tuple[int, int]]]:
        """Drop records as (camera, frame_id, t_capture_ns, reason_code, (anomaly, adhesive)) tuples."""
        for i in range(self.n_drops):
            yield (
                int(self.drop_camera[i]),
                int(self.drop_frame_id[i]),
                int(self.drop_t_capture_ns[i]),
                int(self.drop_reason[i]),
                (int(self.drop_truth[i, 0]), int(self.drop_truth[i, 1])),
            )


class Ring:
    """Preallocated frame slots with a drop-newest policy and a drop-record ring (module doc)."""

    def __init__(
        self,
        slots: int,
        height: int,
        width: int,
        *,
        alloc: Allocator | None = None,
        drop_capacity: int | None = None,
    ) -> None:
        if slots < 2:
            raise ValueError(f"ring slots must be >= 2, got {slots}")
        if height < 1 or width < 1:
            raise ValueError(f"ring frame size must be positive, got {height}x{width} (HxW)")
        self.slots = int(slots)
        self.height = int(height)
        self.width = int(width)
        shape = (self.slots, self.height, self.width, 3)
        if alloc is None:
            images = np.zeros(shape, dtype=np.uint8)
        else:
            images = alloc(shape, np.dtype(np.uint8))
            if images.shape != shape or images.dtype != np.uint8 or not images.flags.c_contiguous:
                raise ValueError(
                    f"ring allocator returned {images.dtype} {images.shape} "
                    f"(c_contiguous={images.flags.c_contiguous}); need a C-contiguous uint8 array {shape}"
                )
            images[...] = 0  # touch every page now, not on the first frame
        self.images: np.ndarray = images
        self.camera = np.zeros(self.slots, dtype=np.int16)
        self.frame_id = np.zeros(self.slots, dtype=np.int64)
        self.t_capture_ns = np.zeros(self.slots, dtype=np.int64)
        self.truth = np.full((self.slots, 2), -1, dtype=np.int8)
        self.status = np.zeros(self.slots, dtype=np.uint8)

        d = int(drop_capacity) if drop_capacity is not None else max(65536, 4 * self.slots)
        if d < 1:
            raise ValueError(f"drop_capacity must be >= 1, got {drop_capacity}")
        self.drop_capacity = d
        self._d_camera = np.zeros(d, dtype=np.int16)
        self._d_frame_id = np.zeros(d, dtype=np.int64)
        self._d_t = np.zeros(d, dtype=np.int64)
        self._d_reason = np.zeros(d, dtype=np.uint8)
        self._d_truth = np.full((d, 2), -1, dtype=np.int8)

        self._cond = threading.Condition(threading.Lock())
        # Monotonic sequence numbers; slot = seq % slots.
        self._head = 0  # next seq to claim
        self._read = 0  # next seq to hand to the consumer
        self._tail = 0  # oldest seq not yet free
        self._d_head = 0  # next drop record to write
        self._d_read = 0  # next drop record to hand out
        self._d_tail = 0  # oldest drop record not yet released
        self._closed = False
        self._c = RingCounters()

    # --- producers ------------------------------------------------------------------------------
    def claim(self) -> int | None:
        """A free slot to write a frame into, or None when the ring is full (drop newest)."""
        with self._cond:
            used = self._head - self._tail
            if used >= self.slots:
                return None
            slot = self._head % self.slots
            self.status[slot] = CLAIMED
            self._head += 1
            if used + 1 > self._c.max_occupancy:
                self._c.max_occupancy = used + 1
            return slot

    def commit(
        self,
        slot: int,
        camera: int,
        frame_id: int,
        t_capture_ns: int,
        truth: tuple[int, int] | None = UNKNOWN_TRUTH,
    ) -> None:
        """Hand the frame written into `slot` (from `claim`) to the consumer."""
        with self._cond:
            if self.status[slot] != CLAIMED:
                raise RuntimeError(f"commit of ring slot {slot} that is not claimed (status {self.status[slot]})")
            self.camera[slot] = camera
            self.frame_id[slot] = frame_id
            self.t_capture_ns[slot] = t_capture_ns
            if truth is None:
                self.truth[slot] = UNKNOWN_TRUTH
            else:
                self.truth[slot, 0] = truth[0]
                self.truth[slot, 1] = truth[1]
            self.status[slot] = COMMITTED
            self._c.committed += 1
            self._cond.notify()

    def drop(
        self,
        camera: int,
        frame_id: int,
        t_capture_ns: int,
        reason_code: int,
        truth: tuple[int, int] | None = UNKNOWN_TRUTH,
        *,
        slot: int | None = None,
    ) -> None:
        """Report a frame that gets no slot or cannot be decoded. Never blocks.

        The record reaches the consumer with the next `take` (the frame is decided as a fail-safe
        reject). Pass `slot=` when the frame had claimed a slot that it now gives up.
        """
        if reason_code not in DROP_NAMES:
            raise ValueError(f"unknown drop reason code {reason_code!r}; known: {sorted(DROP_NAMES)}")
        with self._cond:
            if slot is not None:
                if self.status[slot] != CLAIMED:
                    raise RuntimeError(f"drop of ring slot {slot} that is not claimed (status {self.status[slot]})")
                self.status[slot] = VOID
            if reason_code == DROP_FULL:
                self._c.dropped_full += 1
            elif reason_code == DROP_CORRUPT:
                self._c.dropped_corrupt += 1
            else:
                self._c.dropped_other += 1
            if self._d_head - self._d_tail >= self.drop_capacity:
                self._c.lost_records += 1
            else:
                i = self._d_head % self.drop_capacity
                self._d_camera[i] = camera
                self._d_frame_id[i] = frame_id
                self._d_t[i] = t_capture_ns
                self._d_reason[i] = reason_code
                if truth is None:
                    self._d_truth[i] = UNKNOWN_TRUTH
                else:
                    self._d_truth[i, 0] = truth[0]
                    self._d_truth[i, 1] = truth[1]
                self._d_head += 1
            self._cond.notify()

    # --- the consumer ---------------------------------------------------------------------------
    def _ready(self) -> bool:
        """Something to hand out (call with the lock held)."""
        if self._d_read < self._d_head:
            return True
        seq = self._read
        while seq < self._head:
            st = self.status[seq % self.slots]
            if st == COMMITTED:
                return True
            if st != VOID:
                return False  # the oldest frame is still being written
            seq += 1
        return False

    def take(self, max_n: int, timeout: float | None = None) -> Batch:
        """Up to `max_n` committed frames in consecutive slots, FIFO, plus the pending drop records.

        Waits up to `timeout` seconds (None = until something arrives or `close`) when there is
        nothing to hand out; returns an empty batch (`batch.empty`) on timeout or after `close`.
        Returns without waiting for more frames than are ready: micro-batches form from backlog.
        """
        if max_n < 1:
            raise ValueError(f"take max_n must be >= 1, got {max_n}")
        with self._cond:
            if not self._ready() and not self._closed:
                self._cond.wait_for(lambda: self._closed or self._ready(), timeout)
            S = self.slots
            # Skip slots their producer gave up (VOID): they become free right away.
            freed = False
            while self._read < self._head and self.status[self._read % S] == VOID:
                self.status[self._read % S] = FREE
                self._read += 1
                freed = True
            start = self._read % S
            n = 0
            limit = min(max_n, S - start, self._head - self._read)
            while n < limit and self.status[start + n] == COMMITTED:
                n += 1
            if n:
                self.status[start : start + n] = TAKEN
            seq = self._read
            self._read += n
            self._c.taken += n
            if freed:
                self._advance_tail()

            D = self.drop_capacity
            d_start = self._d_read % D
            nd = min(self._d_head - self._d_read, D - d_start)  # never wraps either
            d_seq = self._d_read
            self._d_read += nd

        return Batch(
            start=start,
            n=n,
            images=self.images[start : start + n],
            camera=self.camera[start : start + n],
            frame_id=self.frame_id[start : start + n],
            t_capture_ns=self.t_capture_ns[start : start + n],
            truth=self.truth[start : start + n],
            n_drops=nd,
            drop_camera=self._d_camera[d_start : d_start + nd],
            drop_frame_id=self._d_frame_id[d_start : d_start + nd],
            drop_t_capture_ns=self._d_t[d_start : d_start + nd],
            drop_reason=self._d_reason[d_start : d_start + nd],
            drop_truth=self._d_truth[d_start : d_start + nd],
            _seq=seq,
            _drop_seq=d_seq,
        )

    def release(self, batch: Batch) -> None:
        """Give the batch's slots and drop records back. Batches are released in `take` order."""
        if batch._released:
            raise RuntimeError("ring batch released twice")
        with self._cond:
            if batch.n_drops:
                if batch._drop_seq != self._d_tail:
                    raise RuntimeError("ring batches must be released in the order take() returned them")
                self._d_tail += batch.n_drops
            if batch.n:
                self.status[batch.start : batch.start + batch.n] = FREE
                self._advance_tail()
            batch._released = True

    def _advance_tail(self) -> None:
        S = self.slots
        while self._tail < self._read and self.status[self._tail % S] == FREE:
            self._tail += 1

    def close(self) -> None:
        """Wake a waiting `take` and make later ones return at once when nothing is pending."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- observation ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def occupancy(self) -> int:
        """Slots in use now (claimed, committed or taken)."""
        with self._cond:
            return self._head - self._tail

    @property
    def pending_drops(self) -> int:
        """Drop records reported and not yet taken."""
        with self._cond:
            return self._d_head - self._d_read

    @property
    def counters(self) -> RingCounters:
        """A consistent snapshot of the counters (a copy; `.as_dict()` for heartbeats)."""
        with self._cond:
            c = self._c
            return RingCounters(
                c.committed, c.taken, c.dropped_full, c.dropped_corrupt, c.dropped_other,
                c.lost_records, c.max_occupancy,
            )
