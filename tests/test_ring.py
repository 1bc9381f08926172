"""The frame ring: FIFO order, batches that never wrap, drop newest, drop records, threads."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from linewatch.pipeline.ring import (
    DROP_CORRUPT,
    DROP_FULL,
    DROP_LOST,
    FREE,
    Ring,
)


def put(ring: Ring, cam: int, fid: int, truth=(-1, -1)) -> int | None:
    slot = ring.claim()
    if slot is None:
        ring.drop(cam, fid, 1000 + fid, DROP_FULL, truth)
        return None
    ring.images[slot].fill(fid % 251)
    ring.commit(slot, cam, fid, 1000 + fid, truth)
    return slot


def test_fifo_metadata_and_pixels():
    ring = Ring(8, 4, 6)
    for fid in range(5):
        put(ring, 0, fid, truth=(fid % 2, 1))
    b = ring.take(16, timeout=0)
    assert b.n == 5 and b.start == 0 and b.n_drops == 0
    assert b.frame_id.tolist() == [0, 1, 2, 3, 4]
    assert b.t_capture_ns.tolist() == [1000, 1001, 1002, 1003, 1004]
    assert b.truth.tolist() == [[0, 1], [1, 1], [0, 1], [1, 1], [0, 1]]
    assert b.images.shape == (5, 4, 6, 3) and b.images.dtype == np.uint8
    assert b.images.flags.c_contiguous
    assert [int(b.images[i, 0, 0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
    assert np.shares_memory(b.images, ring.images)
    ring.release(b)
    assert ring.occupancy == 0
    assert (ring.status == FREE).all()


def test_max_n_and_batches_never_wrap():
    ring = Ring(6, 2, 2)
    for fid in range(4):
        put(ring, 0, fid)
    ring.release(ring.take(4, timeout=0))  # slots 0..3 used and freed; next claim is slot 4
    for fid in range(4, 9):  # slots 4, 5, 0, 1, 2
        assert put(ring, 1, fid) is not None
    b1 = ring.take(10, timeout=0)
    assert (b1.start, b1.n) == (4, 2)  # stops at the end of the array
    assert b1.frame_id.tolist() == [4, 5]
    b2 = ring.take(2, timeout=0)  # max_n honoured
    assert (b2.start, b2.n) == (0, 2) and b2.frame_id.tolist() == [6, 7]
    ring.release(b1)
    ring.release(b2)
    b3 = ring.take(10, timeout=0)
    assert (b3.start, b3.n) == (2, 1) and b3.frame_id.tolist() == [8]
    ring.release(b3)
    assert ring.occupancy == 0


def test_full_ring_drops_newest_and_the_record_flows():
    ring = Ring(3, 2, 2)
    assert [put(ring, 0, fid, truth=(0, 1)) for fid in range(3)] == [0, 1, 2]
    assert put(ring, 0, 3, truth=(1, 0)) is None  # newest frame dropped
    assert put(ring, 0, 4) is None
    c = ring.counters
    assert (c.committed, c.dropped_full, c.max_occupancy) == (3, 2, 3)
    b = ring.take(8, timeout=0)
    assert b.frame_id.tolist() == [0, 1, 2]  # frames already waiting kept their place
    assert b.n_drops == 2
    assert list(b.drops()) == [(0, 3, 1003, DROP_FULL, (1, 0)), (0, 4, 1004, DROP_FULL, (-1, -1))]
    ring.release(b)
    assert ring.pending_drops == 0
    assert put(ring, 0, 5) is not None  # room again


def test_corrupt_frame_voids_its_claimed_slot():
    ring = Ring(4, 2, 2)
    put(ring, 0, 0)
    slot = ring.claim()
    put(ring, 0, 2)
    ring.drop(0, 1, 1001, DROP_CORRUPT, (1, 1), slot=slot)
    b = ring.take(8, timeout=0)
    assert b.frame_id.tolist() == [0]  # the void slot ends this batch ...
    assert list(b.drops()) == [(0, 1, 1001, DROP_CORRUPT, (1, 1))]
    ring.release(b)
    b = ring.take(8, timeout=0)  # ... and is skipped by the next
    assert b.frame_id.tolist() == [2] and b.n_drops == 0
    ring.release(b)
    assert ring.occupancy == 0
    assert ring.counters.dropped_corrupt == 1


def test_the_ring_does_not_import_the_decision_vocabulary():
    code = "import sys, linewatch.pipeline.ring; print('linewatch.pipeline.decide' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_uncommitted_slot_holds_back_later_frames():
    ring = Ring(4, 2, 2)
    slot = ring.claim()
    put(ring, 0, 1)
    assert ring.take(4, timeout=0).n == 0  # FIFO in claim order: frame 0 is still being written
    ring.commit(slot, 0, 0, 1000)
    b = ring.take(4, timeout=0)
    assert b.frame_id.tolist() == [0, 1]


def test_take_times_out_empty_and_close_wakes():
    ring = Ring(2, 2, 2)
    b = ring.take(4, timeout=0.01)
    assert b.empty and b.n == 0 and b.images.shape == (0, 2, 2, 3)
    ring.release(b)  # releasing an empty batch is harmless
    out: list = []
    t = threading.Thread(target=lambda: out.append(ring.take(4, timeout=None)))
    t.start()
    ring.close()
    t.join(timeout=10)
    assert not t.is_alive() and out[0].empty


def test_take_wakes_on_commit():
    ring = Ring(4, 2, 2)
    out: list = []
    t = threading.Thread(target=lambda: out.append(ring.take(4, timeout=30)))
    t.start()
    put(ring, 3, 7)
    t.join(timeout=10)
    assert not t.is_alive() and out[0].frame_id.tolist() == [7] and out[0].camera.tolist() == [3]


def test_drop_record_ring_overflow_counts_lost_records():
    ring = Ring(2, 2, 2, drop_capacity=3)
    for fid in range(5):
        ring.drop(0, fid, 0, DROP_LOST)
    assert ring.counters.lost_records == 2 and ring.counters.dropped_other == 5
    b = ring.take(1, timeout=0)
    assert b.drop_frame_id.tolist() == [0, 1, 2]
    ring.release(b)
    ring.drop(0, 5, 0, DROP_FULL)
    b = ring.take(1, timeout=0)
    assert b.drop_frame_id.tolist() == [5]


def test_misuse_is_an_error():
    ring = Ring(4, 2, 2)
    with pytest.raises(RuntimeError, match="not claimed"):
        ring.commit(1, 0, 0, 0)
    with pytest.raises(ValueError, match="unknown drop reason"):
        ring.drop(0, 0, 0, 99)
    with pytest.raises(ValueError, match="slots must be >= 2"):
        Ring(1, 2, 2)
    put(ring, 0, 0)
    b = ring.take(4, timeout=0)
    ring.release(b)
    with pytest.raises(RuntimeError, match="twice"):
        ring.release(b)
    ring.drop(0, 1, 0, DROP_FULL)
    ring.drop(0, 2, 0, DROP_FULL)
    b1 = ring.take(4, timeout=0)
    ring.drop(0, 3, 0, DROP_FULL)
    b2 = ring.take(4, timeout=0)
    with pytest.raises(RuntimeError, match="order"):
        ring.release(b2)
    ring.release(b1)
    ring.release(b2)


def test_custom_allocator_is_used_and_checked():
    calls = []

    def alloc(shape, dtype):
        calls.append((shape, dtype))
        return np.full(shape, 9, dtype=dtype)

    ring = Ring(3, 4, 5, alloc=alloc)
    assert calls == [((3, 4, 5, 3), np.dtype(np.uint8))]
    assert ring.images.shape == (3, 4, 5, 3) and int(ring.images.max()) == 0
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        Ring(3, 4, 5, alloc=lambda shape, dtype: np.zeros(shape, dtype=np.float32))


def test_multi_producer_stress_every_frame_exactly_once():
    """3 producers, 1 consumer, a small ring: every frame id is committed or dropped, seen once."""
    n_per = 3000
    n_cams = 3
    # Drop records sized so none is lost even if the consumer is descheduled for a while.
    ring = Ring(8, 2, 3, drop_capacity=n_per * n_cams)
    images = ring.images
    stop = threading.Event()
    seen: list[tuple[int, int, str]] = []
    errors: list[str] = []

    def producer(cam: int) -> None:
        for fid in range(n_per):
            slot = ring.claim()
            if slot is None:
                ring.drop(cam, fid, fid, DROP_FULL, (cam % 2, fid % 2))
                continue
            if fid % 97 == 5:  # some frames turn out corrupt after the claim
                ring.drop(cam, fid, fid, DROP_CORRUPT, (cam % 2, fid % 2), slot=slot)
                continue
            ring.images[slot, 0, 0, 0] = cam
            ring.images[slot, 0, 0, 1] = fid % 256
            ring.commit(slot, cam, fid, fid, (cam % 2, fid % 2))

    def consumer() -> None:
        while True:
            b = ring.take(5, timeout=0.05)
            if b.n:
                if not b.images.flags.c_contiguous or b.start + b.n > ring.slots:
                    errors.append(f"bad batch {b.start}+{b.n}")
                for i in range(b.n):
                    cam, fid = int(b.camera[i]), int(b.frame_id[i])
                    if (int(b.images[i, 0, 0, 0]), int(b.images[i, 0, 0, 1])) != (cam, fid % 256):
                        errors.append(f"pixels of {cam}/{fid} overwritten")
                    if tuple(b.truth[i].tolist()) != (cam % 2, fid % 2):
                        errors.append(f"truth of {cam}/{fid}")
                    seen.append((cam, fid, "frame"))
            for cam, fid, _t, code, truth in b.drops():
                if truth != (cam % 2, fid % 2):
                    errors.append(f"drop truth of {cam}/{fid}")
                seen.append((cam, fid, "full" if code == DROP_FULL else "corrupt"))
            ring.release(b)
            if b.empty and stop.is_set():
                return

    cons = threading.Thread(target=consumer)
    cons.start()
    prods = [threading.Thread(target=producer, args=(c,)) for c in range(n_cams)]
    for p in prods:
        p.start()
    for p in prods:
        p.join(timeout=60)
    stop.set()
    cons.join(timeout=60)
    assert not cons.is_alive()
    assert errors == []
    ids = [(c, f) for c, f, _ in seen]
    assert len(ids) == len(set(ids)) == n_per * n_cams  # every frame exactly once
    per_cam: dict[int, list[int]] = {}
    for c, f, kind in seen:
        if kind == "frame":
            per_cam.setdefault(c, []).append(f)
    for fids in per_cam.values():
        assert fids == sorted(fids)  # FIFO per camera
    c = ring.counters
    n_frames = sum(1 for *_, k in seen if k == "frame")
    assert c.committed == c.taken == n_frames
    assert c.dropped_full == sum(1 for *_, k in seen if k == "full")
    assert c.dropped_corrupt == sum(1 for *_, k in seen if k == "corrupt") > 0
    assert c.lost_records == 0 and c.max_occupancy <= ring.slots
    assert ring.images is images  # never reallocated
    assert ring.occupancy == 0
