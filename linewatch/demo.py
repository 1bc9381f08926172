"""The live demo behind `make demo` / `linewatch demo`.

The daemon runs in this process on the embedded default profile (`linewatch/profiles/demo.toml`:
a simulated battery line, the shipped model `engines/resse-default.onnx` on ONNX Runtime when no GPU
is present), publishing on a free loopback port. A subscriber — the same library a PLC gateway
uses — prints the running decisions and, at the end, a summary: frames, rejects by reason,
frames without a decision, sequence gaps, latency, and agreement with the simulated line's ground
truth (a frame should be rejected when it shows an anomaly or, under the adhesive rule `present`,
lacks its adhesive).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from linewatch.logs import configure as configure_logging
from linewatch.pipeline.daemon import Daemon
from linewatch.profile import SyntheticCamera, default_profile
from linewatch.subscribe import Gap, Message, Subscriber


def expected_reject(truth: dict[str, Any] | None, adhesive_rule: str) -> bool | None:
    """What a perfect inspector decides for a frame of known truth (None when the truth is unknown)."""
    if not truth or truth.get("anomaly") is None:
        return None
    reject = bool(truth["anomaly"])
    adhesive = truth.get("adhesive")
    if adhesive is not None and adhesive_rule == "present":
        reject |= not adhesive
    elif adhesive is not None and adhesive_rule == "absent":
        reject |= bool(adhesive)
    return reject


class _Tally:
    """What the subscriber saw; filled in the subscriber's thread, read after it stops."""

    def __init__(self, adhesive_rule: str, out: Any) -> None:
        self.rule = adhesive_rule
        self.out = out
        self.frames: set[tuple[str, int]] = set()
        self.reasons: Counter[str] = Counter()
        self.confusion: Counter[tuple[bool, bool]] = Counter()  # (expected reject, decided reject)
        self.latency_ms: list[float] = []
        self.gaps = 0
        self.duplicates = 0
        self.failsafe_events: list[str] = []
        self.t_first = self.t_last = 0.0
        self._last_print = 0.0

    def on_message(self, msg: Message) -> None:
        h = msg.header
        if msg.topic != "decision":
            return
        self.t_last = time.monotonic()
        self.t_first = self.t_first or self.t_last
        key = (h["camera"], int(h["frame_id"]))
        if key in self.frames:
            self.duplicates += 1
        self.frames.add(key)
        reject = h["decision"] == "reject"
        self.reasons[h["reason"]] += 1
        self.latency_ms.append((time.time_ns() - int(h["t_capture_ns"])) / 1e6)
        exp = expected_reject(h.get("truth"), self.rule)
        if exp is not None:
            self.confusion[(exp, reject)] += 1
        now = time.monotonic()
        if reject or now - self._last_print >= 1.0:
            self._last_print = now
            s = h.get("scores") or {}
            scores = " ".join(f"{k}={v:.3f}" for k, v in s.items()) if s else "not inferred"
            truth = h.get("truth") or {}
            t = "/".join("?" if truth.get(k) is None else str(truth[k]) for k in ("anomaly", "adhesive"))
            mark = "REJECT" if reject else "pass  "
            agree = "" if exp is None else ("  ok" if exp == reject else "  MISMATCH")
            print(f"{h['camera']} frame {h['frame_id']:>5}  {mark} {h['reason']:<22} {scores}  truth a/h={t}{agree}",
                  file=self.out, flush=True)

    def on_gap(self, gap: Gap) -> None:
        self.gaps += gap.missing

    def on_failsafe(self, reason: str) -> None:
        self.failsafe_events.append(reason)


def run_demo(frames: int = 300, fps: float | None = None, out: str | None = None, backend: str | None = None,
             precision: str | None = None) -> int:
    """Run the demo; returns the exit status (0 when every frame got exactly one decision)."""
    configure_logging("console", level="warning", stream=sys.stderr)
    if out:
        _write_sample_set(out)
    prof = default_profile()
    cam = prof.camera[0]
    assert isinstance(cam, SyntheticCamera), "the embedded demo profile simulates its line"
    if fps is None:  # the line rate of the profile's camera
        fps = cam.fps
    prof = prof.model_copy(update={
        "station": prof.station.model_copy(update={"endpoint": "tcp://127.0.0.1:0"}),
        "camera": [cam.model_copy(update={"count": int(frames), "fps": float(fps)})],
    })
    rule = prof.decision.adhesive_rule
    daemon = Daemon(prof, backend=backend, precision=precision)
    t = daemon.decider.thresholds
    src = prof.decision.thresholds.sources(daemon.model_thresholds)
    print(f"linewatch demo: a simulated battery line at {fps:g} fps sends {frames} cells; "
          f"model {prof.model.path}, thresholds anomaly {t[0]:g} ({src['anomaly']}), adhesive {t[1]:g} "
          f"({src['adhesive']}), adhesive rule {rule!r}", flush=True)
    t0 = time.monotonic()
    daemon.start()
    endpoint, eng = daemon.endpoint, daemon.engine
    assert endpoint is not None and eng is not None  # both exist once start() returned
    print(f"daemon up in {time.monotonic() - t0:.1f} s: engine {eng.name} on {eng.device}, "
          f"publishing on {endpoint}; subscriber printing rejects and one pass a second\n", flush=True)
    tally = _Tally(rule, sys.stdout)
    stop = threading.Event()
    sub = Subscriber(endpoint, topics=("decision",), on_message=tally.on_message, on_gap=tally.on_gap,
                     on_failsafe=tally.on_failsafe, heartbeat_timeout=5.0)

    def listen() -> None:
        while not stop.is_set():
            sub.poll(0.05)

    listener = threading.Thread(target=listen, name="demo-subscriber", daemon=True)
    listener.start()
    code = daemon.join()
    # the last messages are in flight for a moment after the daemon returns
    deadline = time.monotonic() + 3.0
    decided = daemon.worker.counters()["decisions"] if daemon.worker else 0
    while len(tally.frames) < decided and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    listener.join(2.0)
    sub.close()
    _summary(tally, frames, decided)
    complete = len(tally.frames) == decided == frames and tally.duplicates == 0 and tally.gaps == 0
    return 0 if code == 0 and complete else 1


def _summary(t: _Tally, frames: int, decided: int) -> None:
    n = len(t.frames)
    rejects = sum(v for k, v in t.reasons.items() if k != "pass")
    lat = np.array(t.latency_ms) if t.latency_ms else np.zeros(1)
    tp, tn = t.confusion[(True, True)], t.confusion[(False, False)]
    fp, fn = t.confusion[(False, True)], t.confusion[(True, False)]
    known = tp + tn + fp + fn
    print("\nsummary")
    print(f"  frames sent {frames}, decided by the daemon {decided}, decisions received {n}"
          f" (without a decision: {frames - n}, duplicates: {t.duplicates}, sequence gaps: {t.gaps})")
    span = t.t_last - t.t_first
    rate = (n - 1) / span if n > 1 and span > 0 else 0.0
    print(f"  {rate:.1f} decisions/s from the first to the last ({span:.1f} s); capture -> subscriber latency "
          f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, max {lat.max():.1f} ms")
    print(f"  rejects {rejects} ({100 * rejects / max(n, 1):.1f} %): "
          + ", ".join(f"{k} {v}" for k, v in sorted(t.reasons.items()) if k != "pass"))
    if known:
        print(f"  agreement with the ground truth: {100 * (tp + tn) / known:.1f} % of {known} frames "
              f"(rejected defective {tp}, passed good {tn}, rejected good {fp}, passed defective {fn})")
    stops = [e for e in t.failsafe_events if e.endswith("is stopping")]
    others = [e for e in t.failsafe_events if e not in stops]
    if stops:
        print("  the daemon announced its clean stop; the subscriber went fail-safe, as a gateway should")
    if others:
        print(f"  subscriber fail-safe events: {', '.join(others)}")


def _write_sample_set(out: str) -> None:
    from pathlib import Path

    from linewatch.data.preview import write_preview
    from linewatch.data.synth import write_dataset

    path = Path(out)
    write_dataset(path, 12, seed=0)
    write_preview(path, path / "preview.png")
    print(f"wrote 12 synthetic cells and their contact sheet to {path / 'preview.png'}")
