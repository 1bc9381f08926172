"""The overlay encoder: pool slots, what an encode makes of a decision + slot, delivery, stop without drain."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from linewatch.pipeline.decide import Decision
from linewatch.pipeline.overlay_encoder import EncodedOverlay, OverlayEncoder

IMAGE = np.full((64, 80, 3), 128, np.uint8)
MASKS = np.zeros((2, 8, 10), np.float32)
MASKS[0, 2:6, 3:7] = 1.0
DECISION = Decision("cam0", 3, 1, 2, (0.9, 0.8), (0.7, 0.7), True, ("anomaly",), "present", False)


def _refuse(item: EncodedOverlay) -> bool:
    return False


def test_encode_draws_the_slot_as_a_jpeg_and_frees_the_slot() -> None:
    enc = OverlayEncoder(1, (64, 80), 90, deliver=_refuse)
    slot = enc.copy_in(IMAGE, MASKS)
    assert slot == 0 and enc.copy_in(IMAGE, MASKS) == -1  # the only slot is taken
    item = enc.encode(DECISION, slot)
    assert item is not None and item.decision is DECISION and (item.width, item.height) == (80, 64)
    img = cv2.imdecode(np.frombuffer(item.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (64, 80, 3) and np.abs(img.astype(int) - 128).max() > 60  # contours drawn
    assert enc.copy_in(IMAGE, None) == 0  # freed by the encode
    assert enc.skipped == 1


def test_copy_in_skips_what_the_pool_cannot_hold() -> None:
    enc = OverlayEncoder(2, deliver=_refuse)  # allocated at the first image
    assert enc.copy_in(IMAGE, MASKS) >= 0
    assert enc.copy_in(np.zeros((10, 10, 3), np.uint8), None) == -1  # another shape
    assert enc.copy_in(IMAGE.astype(np.float32), None) == -1  # not uint8
    assert OverlayEncoder(0, deliver=_refuse).copy_in(IMAGE, None) == -1  # no pool
    assert enc.skipped == 2


def test_the_thread_delivers_in_submit_order_and_counts_refusals() -> None:
    got: list[EncodedOverlay] = []
    lock = threading.Lock()

    def deliver(item: EncodedOverlay) -> bool:
        with lock:
            got.append(item)
            return len(got) <= 2  # the third is refused (a full queue)

    enc = OverlayEncoder(4, (64, 80), deliver=deliver).start()
    for i in range(3):
        enc.submit(Decision("cam0", i, 1, 2, None, (0.7, 0.7), True, ("dropped",), "present", True),
                   enc.copy_in(IMAGE, None))
    enc.stop(drain=True)
    assert [item.decision.frame_id for item in got] == [0, 1, 2]
    assert enc.skipped == 1


def test_stop_without_drain_gives_the_slots_back_unencoded() -> None:
    got: list[EncodedOverlay] = []
    gate = threading.Event()

    def deliver(item: EncodedOverlay) -> bool:
        got.append(item)
        gate.wait(10)  # hold the thread on the first overlay while stop(drain=False) is called
        return True

    enc = OverlayEncoder(3, (64, 80), deliver=deliver).start()
    for _ in range(3):
        enc.submit(DECISION, enc.copy_in(IMAGE, MASKS))
    for _ in range(1000):
        if got:
            break
        time.sleep(0.005)
    (thread,) = [t for t in threading.enumerate() if t.name == "linewatch-overlays"]
    enc.stop(drain=False, timeout=0)
    gate.set()
    thread.join(10)
    assert not thread.is_alive() and len(got) == 1  # the two still queued were not encoded ...
    assert sorted(enc.copy_in(IMAGE, MASKS) for _ in range(3)) == [0, 1, 2]  # ... and gave their slots back


def test_settings_are_validated_with_the_value_and_the_allowed_range() -> None:
    with pytest.raises(ValueError, match="overlay_pool = -1: must be >= 0"):
        OverlayEncoder(-1, deliver=_refuse)
    with pytest.raises(ValueError, match="jpeg_quality = 101: must be in 1..100"):
        OverlayEncoder(1, jpeg_quality=101, deliver=_refuse)
    with pytest.raises(ValueError, match="overlay_shape"):
        OverlayEncoder(1, (0, 4), deliver=_refuse)
