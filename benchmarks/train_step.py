"""Speed of one stage-1 training step on this machine: memory layout and precision (docs/model.md, §2).

Variants, timed interleaved so that load from other processes hits them alike (quote the ratios):
  fp32-nchw   FP32, contiguous NCHW (what training did on CPU before channels_last)
  fp32-nhwc   FP32, channels_last (the CPU default now)
  bf16-nhwc   bf16 autocast, channels_last (`linewatch train --amp bf16`; CPUs with native bf16)

One step = forward of the segmentation stage, pixel BCE, backward, Adam step, on random input of the
training batch shape (default 16 x 3 x 512 x 1224) — the same work as a step of `linewatch train`
minus the (cheap) augmentation.

    python benchmarks/train_step.py [--steps 5] [--batch 16] [--size 512x1224] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from linewatch.model.resse import NetworkConfig, ResSENet
from linewatch.model.train import cpu_bf16_supported


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one warm-up)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", default="512x1224", help="HxW")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    dev = torch.device(args.device)
    variants = {"fp32-nchw": (False, None), "fp32-nhwc": (True, None)}
    if dev.type == "cuda" or cpu_bf16_supported():
        variants["bf16-nhwc"] = (True, torch.bfloat16)

    torch.manual_seed(0)
    x0 = torch.randn(args.batch, 3, h, w, device=dev)
    target = (torch.rand(args.batch, 2, h // 8, w // 8, device=dev) > 0.99).float()
    setups = {}
    for name, (cl, dtype) in variants.items():
        model = ResSENet(NetworkConfig(input_height=h, input_width=w)).to(dev)
        x = x0
        if cl:
            model = model.to(memory_format=torch.channels_last)
            x = x0.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.segmentation.parameters())
        setups[name] = (model, x, dtype, opt)

    def step(name: str) -> float:
        model, x, dtype, opt = setups[name]
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            _, logits = model.segmentation(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for name in setups:  # warm-up (oneDNN primitive creation)
        step(name)
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.steps):
        for name in setups:
            times[name].append(step(name))

    ref = statistics.median(times["fp32-nchw"])
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {dev}; batch {args.batch} x {h}x{w}, "
          f"median of {args.steps} steps (interleaved)")
    print("| variant | median s/step | images/s | speed vs fp32-nchw |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {args.batch / med:.1f} | {ref / med:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
