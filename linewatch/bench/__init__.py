"""`linewatch bench`: sustained throughput and latency of the whole pipeline, measured end to end.

What runs is the real daemon (`linewatch.pipeline.daemon.Daemon`) in this process: acquisition thread(s),
ring, engine, inference worker, decisions and the publisher, publishing on a free loopback port.
A **live subscriber in a separate process** (a plain ZeroMQ SUB socket, like a PLC gateway; a
separate process so that its JSON decoding does not compete for this process's GIL) receives every
`decision` message and stamps its arrival. Everything reported is counted from what the subscriber
received, except the per-stage times, which come from the inference worker's histograms.

Timeline: engine warm-up (`engine.warmup()`), publisher bound, subscriber connected and live (first
heartbeat seen), then the sources start; `warmup_s` seconds of traffic that are not measured; then
`duration_s` seconds measured; then the daemon drains (every frame in the ring is decided and
published) and the subscriber reports.

Pacing of the bench's synthetic source (`pace`), the answer to "sustained" when the source is
faster than the engine:

* `backpressure` (default, closed loop): the simulated camera is *triggered* when the pipeline
  has room: it waits until fewer than `inflight` frames are in the ring, then captures (stamps
  `t_capture_ns`), copies the frame into its slot and commits. Nothing is dropped by
  construction; the measured rate is the pipeline's capacity at that queue depth. `inflight`
  defaults to "auto": the engine is timed once per batch size (1, 2, 4, ..., max_batch) and the
  size n with the highest throughput n / t(n) among those whose 2 x t(n) (a batch waiting while
  the previous one runs, then its own run) fits in half the profile's deadline is taken; the
  worker's batches are capped at n and `inflight` = 2n (double buffering). So a GPU engine is fed
  full batches, and a CPU engine whose batch of 8 takes longer than the deadline (every frame
  would be rejected "late") is fed one frame at a time with the next one waiting.
* `fixed` (with `fps`): a free-running line camera at `fps` frames/s (absolute schedule). A frame
  that finds the ring full is dropped and decided as a fail-safe reject, as on a real line. Use it
  for the latency at the line's rate (e.g. `--fps 25`).
* `free`: as fast as the source can copy frames; when the engine is slower, most frames are
  dropped. Throughput of *inferred* decisions is reported apart from the fail-safe ones.

The synthetic frames are rendered once into a pool (`pool` frames at the model's input size, ground
truth kept) before the run; per frame the source does what a camera source does at best: one copy
into the ring slot (`pixels="copy"`, H x W x 3 bytes), or nothing (`pixels="reuse"`: every slot is
filled once up front, which isolates the copy cost). `source="genicam"|"replay"` runs the profile's
own cameras instead (their own pacing; frames they drop count as fail-safe decisions).

Throughput is counted in 1-second windows of the subscriber's arrival time over the measured
period: the median and the minimum window, for inferred decisions (scores, on time) and
fail-safe ones separately. Latency is from capture (`t_capture_ns` in the header) to the
subscriber's receipt, for frames captured in the measured period, split into
capture -> decision, decision -> sent (publisher queue) and sent -> received (ZeroMQ + decode).

`baseline="torch"`: the same pool of frames through the loop a user would write with the plain
PyTorch model (FP32 eager, the engine's device): per frame, stamp the capture time, tensor,
normalise, `model(x)`, threshold; timed the same way. torch is imported for this only.
"""

from linewatch.bench.config import BASELINES, PACES, PIXELS, REPORT_KEYS, SOURCES, BenchConfig
from linewatch.bench.report import config_dict, format_report
from linewatch.bench.run import BenchProgress, build_report, make_sources, open_bench_engine, run_bench
from linewatch.bench.source import BenchSource, render_pool
from linewatch.bench.stats import exit_status, frame_accounting, percentiles_ms, verdict, window_counts

__all__ = [
    "BASELINES", "PACES", "PIXELS", "REPORT_KEYS", "SOURCES", "BenchConfig", "BenchProgress", "BenchSource", "build_report",
    "config_dict", "exit_status", "format_report", "frame_accounting", "make_sources", "open_bench_engine",
    "percentiles_ms", "render_pool", "run_bench", "verdict", "window_counts",
]
