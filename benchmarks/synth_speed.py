"""Synthetic-surface render throughput on ONE core (SPEC §4; target >= 20 images/s).

    python benchmarks/synth_speed.py [--runs 5] [--images 30] [--seed 0]

Pins OpenMP/BLAS and OpenCV to one thread, renders ``--images`` images ``--runs`` times with
``render()`` (image + masks + labels) and ``render_into()`` (image only, into a preallocated
buffer, as the simulated camera does), and prints the median images/s of each.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from linewatch.data.synth import SynthConfig, render, render_into  # noqa: E402


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cfg = SynthConfig()
    buf = np.empty((cfg.height, cfg.width, 3), np.uint8)
    for i in range(3):  # warm-up (imports, allocator)
        render(args.seed, i, cfg)
    full = [_rate(lambda i: render(args.seed, i, cfg), args.images) for _ in range(args.runs)]
    into = [_rate(lambda i: render_into(args.seed, i, buf, cfg), args.images) for _ in range(args.runs)]
    result = {
        "size": f"{cfg.height}x{cfg.width}",
        "threads": 1,
        "runs": args.runs,
        "images_per_run": args.images,
        "render_img_per_s_median": round(statistics.median(full), 1),
        "render_into_img_per_s_median": round(statistics.median(into), 1),
        "render_runs": [round(r, 1) for r in full],
        "render_into_runs": [round(r, 1) for r in into],
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }
    print(
        f"synth render(): {result['render_img_per_s_median']} img/s, render_into(): "
        f"{result['render_into_img_per_s_median']} img/s (median of {args.runs} runs x {args.images} images, "
        f"1 thread, {result['size']})"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
