"""This CPU's arithmetic peak, measured, against what the OpenVINO engine reaches on the shipped model.

    python benchmarks/cpu_peak.py [--seconds 1] [--threads 0] [--json]

Three micro-kernels in C (compiled here with gcc; needs gcc and an x86-64 CPU with AVX-512):

- clock: a chain of dependent 64-bit `add`s (one cycle each on every x86 core since the 1990s),
  timed on one thread -> the core clock while busy, in GHz (a VM's /proc/cpuinfo MHz is the TSC);
- fp32 peak: 12 independent accumulators of `vfmadd231ps zmm` (16 lanes x 2 FLOP) on every thread;
- bf16 peak: 12 independent accumulators of `vdpbf16ps zmm` (32 bf16 pairs x 2 FLOP) on every thread
  (skipped without AVX512_BF16).

FLOP per cycle per core = measured FLOP/s / (threads x clock): the hardware's issue width for that
instruction (on AMD Zen 4: 32 fp32 and 64 bf16, two 256-bit pipes per 512-bit instruction).
`--model` adds the engine's side: the model's FLOP per frame (conv + linear MACs x 2, counted by
forward hooks, `linewatch.model.resse.conv_macs`) x the openvino bf16 engine's frames/s at batch 1 =
the share of the measured bf16 peak the engine runs at.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

C_SOURCE = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static long clock_chain(long n) {  /* 100 dependent adds per iteration */
    long x = 0;
    for (long i = 0; i < n; i++) {
        __asm__ volatile(
#define A "add $1, %0\n\t"
#define A10 A A A A A A A A A A
            A10 A10 A10 A10 A10 A10 A10 A10 A10 A10
            : "+r"(x));
    }
    return x;
}

typedef struct { long iters; int bf16; float out; } job;

__attribute__((target("avx512f,avx512bf16")))
static void *kernel(void *p) {
    job *j = (job *)p;
    __m512 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    __m512 a = _mm512_set1_ps(1e-7f), b = _mm512_set1_ps(0.999f);
    __m512bh ah = (__m512bh)_mm512_set1_epi16(0x3400), bh = (__m512bh)_mm512_set1_epi16(0x3f80);
    if (j->bf16) {
        for (long n = 0; n < j->iters; n++)
            for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], ah, bh);
    } else {
        for (long n = 0; n < j->iters; n++)
            for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, a);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, acc[i]);
    j->out = _mm512_reduce_add_ps(s);
    return NULL;
}

static double peak(int threads, long iters, int bf16) {
    pthread_t t[256]; job j[256];
    double t0 = now();
    for (int i = 0; i < threads; i++) { j[i].iters = iters; j[i].bf16 = bf16; pthread_create(&t[i], NULL, kernel, &j[i]); }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double dt = now() - t0;
    return (double)threads * iters * 12 * (bf16 ? 64 : 32) / dt;  /* FLOP/s */
}

int main(int argc, char **argv) {
    const char *what = argv[1]; long n = atol(argv[2]); int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (!strcmp(what, "clock")) { double t0 = now(); long x = clock_chain(n); double dt = now() - t0;
        printf("%.6f %ld\n", 100.0 * n / dt / 1e9, x & 1); return 0; }
    printf("%.6e\n", peak(threads, n, !strcmp(what, "bf16")));
    return 0;
}
"""


def build(tmp: Path) -> Path:
    src, exe = tmp / "peak.c", tmp / "peak"
    src.write_text(C_SOURCE)
    subprocess.run(["gcc", "-O3", "-funroll-loops", "-pthread", "-o", str(exe), str(src)], check=True)
    return exe


def run(exe: Path, what: str, n: int, threads: int = 1) -> float:
    out = subprocess.run([str(exe), what, str(n), str(threads)], check=True, capture_output=True, text=True)
    return float(out.stdout.split()[0])


def calibrated(exe: Path, what: str, seconds: float, threads: int, repeats: int = 5) -> float:
    """Median of `repeats` runs sized to take about `seconds` each."""
    n = 1000
    while True:
        t0 = time.perf_counter()
        run(exe, what, n, threads)
        if time.perf_counter() - t0 > 0.05:
            break
        n *= 4
    n = int(n * seconds / max(time.perf_counter() - t0, 1e-3))
    return statistics.median(run(exe, what, n, threads) for _ in range(repeats))


def engine_side(model: Path, iters: int) -> dict[str, float]:
    """FLOP per frame of the model's config and the openvino bf16 engine's batch-1 frames/s (median)."""
    import torch

    from linewatch.engines.factory import open_engine
    from linewatch.engines.manifest import load_manifest
    from linewatch.model.export import load_model
    from linewatch.model.resse import conv_macs

    man, onnx = load_manifest(model)
    # the engine first: torch's OpenMP threads spin for a while after any torch call and would
    # take the cores from the engine being timed
    engine = open_engine(model, backend="openvino", max_batch=1, precision="bf16")
    frame = np.random.default_rng(0).integers(0, 256, (1, *man.input_hw, 3), dtype=np.uint8)
    for _ in range(5):
        engine.infer(frame)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        engine.infer(frame)
        ts.append(time.perf_counter() - t0)
    fps = 1.0 / statistics.median(ts)
    net = load_model(onnx.parent / man.weights)
    with torch.no_grad():
        flop = 2.0 * conv_macs(net)
    return {"model_gflop_per_frame": flop / 1e9, "engine_bf16_fps_batch1": fps, "engine_gflops": flop * fps / 1e9}


def main(argv: list[str] | None = None) -> int:
    from linewatch.engines.base import physical_cores
    from linewatch.engines.openvino import cpu_flags

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per kernel run (median of 5 runs)")
    ap.add_argument("--threads", type=int, default=0, help="threads of the peak kernels (default: physical cores)")
    ap.add_argument("--model", type=Path, default=None, help="also time this model on openvino bf16 (e.g. the shipped one)")
    ap.add_argument("--iters", type=int, default=60, help="engine calls timed with --model (default 60)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    threads = args.threads or physical_cores()
    flags = cpu_flags()
    out: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": threads,
                              "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        ghz = calibrated(exe, "clock", args.seconds, 1)
        out["clock_ghz"] = ghz
        fp32 = calibrated(exe, "fp32", args.seconds, threads)
        out["fp32_peak_gflops"] = fp32 / 1e9
        out["fp32_flop_per_cycle_per_core"] = fp32 / (threads * ghz * 1e9)
        if "avx512_bf16" in flags:
            bf16 = calibrated(exe, "bf16", args.seconds, threads)
            out["bf16_peak_gflops"] = bf16 / 1e9
            out["bf16_flop_per_cycle_per_core"] = bf16 / (threads * ghz * 1e9)
    if args.model:
        side = engine_side(args.model, args.iters)
        out.update(side)
        if "bf16_peak_gflops" in out:
            out["engine_share_of_bf16_peak"] = side["engine_gflops"] / float(out["bf16_peak_gflops"])  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for k, v in out.items():
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
