"""Training throughput on a CPU: one run with every core, against N runs at once with the cores shared out
(`linewatch ablate --parallel N`, `linewatch.model.ablate.worker_threads`).

Each variant trains stage-1 steps (forward of the segmentation stage, pixel BCE, backward, Adam step, on random
input of the training batch shape, as in `benchmarks/train_step.py`) for the same wall time; the variants run
one after another, in rounds, so that drift of a shared machine hits them alike. Quote the ratio.

    python benchmarks/train_threads.py [--parallel 2] [--batch 16] [--size 256x256] [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import time
from typing import Any


def worker(threads: int, batch: int, h: int, w: int, seconds: float, start: Any, out: Any) -> None:
    import torch
    import torch.nn.functional as F

    from linewatch.model.resse import NetworkConfig, ResSENet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ResSENet(NetworkConfig(input_height=h, input_width=w)).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, h, w).contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch, 2, h // 8, w // 8) > 0.99).float()
    opt = torch.optim.Adam(model.segmentation.parameters())

    def step() -> None:
        _, logits = model.segmentation(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (oneDNN primitive creation)
    start.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    out.put(n * batch / (time.perf_counter() - t0))


def images_per_s(procs: int, threads: int, args: argparse.Namespace, h: int, w: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=worker, args=(threads, args.batch, h, w, args.seconds, start, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    rates = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return sum(rates)


def main(argv: list[str] | None = None) -> int:
    from linewatch.model.ablate import worker_threads

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parallel", type=int, default=2, help="runs at once in the shared variant")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", default="256x256", help="HxW")
    p.add_argument("--seconds", type=float, default=20.0, help="training time per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    cores = worker_threads(1)
    shared = worker_threads(args.parallel)
    variants = {f"1 run x {cores} threads": (1, cores), f"{args.parallel} runs x {shared} threads": (args.parallel, shared)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (procs, threads) in variants.items():
            rates[name].append(images_per_s(procs, threads, args, h, w))
    print(f"machine: {platform.processor() or platform.machine()}, {cores} CPUs; stage-1 steps, batch {args.batch} x "
          f"{h}x{w}, {args.seconds:.0f} s per variant, median of {args.rounds} rounds")
    print("| variant | images/s (all runs together) | vs one run |")
    print("|---|---:|---:|")
    ref = statistics.median(next(iter(rates.values())))
    for name, rs in rates.items():
        print(f"| {name} | {statistics.median(rs):.1f} | {statistics.median(rs) / ref:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
