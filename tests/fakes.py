"""Stand-ins the pipeline tests share: an engine that scores from the pixels, a publisher that keeps every
decision, a log that keeps every event, a stand-in model file for the null engine."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
from waiting import wait_until

from linewatch.protocol import reason_text

HW = (16, 24)
"""The fake engine's input size (height, width)."""


def stub_model(folder: Path, name: str = "stub.onnx") -> Path:
    """A stand-in model for the null engine in `folder`: any bytes + a manifest (`<stem>.json`) with their
    sha256 and a 64 x 160 input. Returns the .onnx path."""
    from linewatch.engines.manifest import Manifest, sha256_file

    onnx = folder / name
    onnx.write_bytes(b"not a network: the null engine never reads it")
    Manifest(onnx=onnx.name, sha256=sha256_file(onnx), input_height=64, input_width=160).save(
        onnx.with_suffix(".json"))
    return onnx


class FakeEngine:
    """Scores from the pixels: anomaly = image[0, 0, 0] / 255, adhesive = image[0, 0, 1] / 255."""

    name = "fake"
    device = "cpu"
    precision = "f32"
    pinned = False

    def __init__(self, max_batch: int = 4, fail_calls: tuple[int, ...] = (), block: threading.Event | None = None):
        self.input_hw = HW
        self.max_batch = max_batch
        self.fail_calls = set(fail_calls)
        self.block = block
        self.blocked = threading.Event()
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._scores = np.zeros((max_batch, 2), np.float32)
        self._masks = np.zeros((max_batch, 2, HW[0] // 8, HW[1] // 8), np.float32)
        self.closed = False

    def warmup(self) -> None:
        pass

    def infer(self, frames: np.ndarray):
        self.calls += 1
        n = frames.shape[0]
        assert 1 <= n <= self.max_batch and frames.shape[1:] == (*HW, 3)
        self.batch_sizes.append(n)
        if self.block is not None and self.calls > 3:
            self.blocked.set()
            self.block.wait()
        if self.calls in self.fail_calls:
            raise RuntimeError("simulated CUDA error")
        self._scores[:n] = frames[:, 0, 0, :2] / 255.0
        return self._masks[:n], self._scores[:n]

    def close(self) -> None:
        self.closed = True


class FakePublisher:
    """Keeps every decision it is handed (`keep=False`: counts them only, for long runs that measure memory)."""

    def __init__(self, keep: bool = True):
        self.keep = keep
        self.count = 0
        self.decisions = []
        self.images = 0
        self.started = self.stopped = False
        self.lock = threading.Lock()

    def start(self):
        self.started = True

    def stop(self, drain=True):
        self.stopped = True

    def submit(self, decision, image=None, masks=None):
        with self.lock:
            self.count += 1
            if self.keep:
                self.decisions.append(decision)
            self.images += image is not None

    def reasons(self):
        return Counter(reason_text(d.reasons) for d in self.decisions)

    def wait_for_decision(self, pred, timeout=30.0):
        """Until a published decision satisfies `pred` (the daemon's threads run at their own pace)."""

        def seen():
            with self.lock:
                return any(pred(d) for d in self.decisions)

        wait_until(seen, timeout, "such a decision")

    def wait_for_count(self, n, timeout=30.0):
        """Until at least `n` decisions are published."""
        wait_until(lambda: len(self.decisions) >= n, timeout, lambda: f"{n} decisions (got {len(self.decisions)})")


class FakeLog:
    def __init__(self):
        self.events: list[tuple[str, str, dict]] = []
        self.seen = threading.Condition()

    def _add(self, level, event, **kw):
        with self.seen:
            self.events.append((level, event, kw))
            self.seen.notify_all()

    def info(self, event, **kw):
        self._add("info", event, **kw)

    def warning(self, event, **kw):
        self._add("warning", event, **kw)

    def error(self, event, **kw):
        self._add("error", event, **kw)

    def exception(self, event, **kw):
        self._add("error", event, **kw)

    def wait_for(self, event, timeout=30.0):
        with self.seen:
            assert self.seen.wait_for(lambda: any(e[1] == event for e in self.events), timeout), f"no {event!r} log"

    def names(self):
        return [e[1] for e in self.events]
