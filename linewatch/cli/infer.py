"""`linewatch infer`: scores (and overlays) for image files, on any backend.

    linewatch infer --model engines/<model>.onnx [--backend auto|onnxruntime|tensorrt|torch|null]
                    [--out DIR] [--threshold 0.7 | --threshold anomaly=0.6 ...] [--json] IMAGE...

Images of any size become the model's input by the one rule of training and the line
(`linewatch.preprocess`: RGB, grayscale replicated, the per-axis resize rule). A head is
flagged when its score >= its threshold (default: the manifest's thresholds). With `--out`, one
overlay per image (mask contours of both heads + scores) is written as `<name>.overlay.jpg`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from linewatch import HEADS, jsonfile
from linewatch.cli.args import add_backend, add_command, add_max_batch, add_model, add_precision, check_min
from linewatch.errors import UsageError


def parse_thresholds(values: list[str] | None, defaults: dict[str, float]) -> dict[str, float]:
    """["0.7"] → both heads; ["anomaly=0.6", "adhesive=0.4"] → per head. Values in [0, 1]."""
    out = {h: float(defaults.get(h, 0.7)) for h in HEADS}
    for raw in values or []:
        name, sep, value = raw.partition("=")
        heads = [name] if sep else list(HEADS)
        text = value if sep else raw
        for h in heads:
            if h not in HEADS:
                raise UsageError(f"--threshold {raw!r}: unknown head {h!r}; allowed: {', '.join(HEADS)}")
        try:
            t = float(text)
        except ValueError:
            raise UsageError(f"--threshold {raw!r}: {text!r} is not a number") from None
        if not 0.0 <= t <= 1.0:
            raise UsageError(f"--threshold {raw!r}: {t} is outside [0, 1]")
        for h in heads:
            out[h] = t
    return out


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "infer", run, help="score image files with the model (table or JSON) and write mask overlays",
                    description=__doc__, raw=True)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (.png, .jpg, .bmp, .tif), any size")
    add_model(p, help="ONNX model or its manifest JSON (default: the one engines/*.onnx)")
    add_backend(p, default="auto", help="inference backend (default: auto)")
    add_precision(p, help="openvino: auto (bf16 where the CPU has it, else f32), f32, bf16, int8")
    p.add_argument("--device", type=int, default=0, help="CUDA device index for GPU backends (default: 0)")
    add_max_batch(p, default=8, help="frames per engine call (default: 8)")
    p.add_argument("--out", type=Path, default=None, help="write <name>.overlay.jpg per image into DIR")
    p.add_argument(
        "--threshold",
        action="append",
        metavar="[HEAD=]T",
        help="decision threshold, both heads or one head (repeatable); default: the manifest's",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from linewatch.data.dataset import read_frame
    from linewatch.engines.factory import open_engine, precision_opts, resolve_backend
    from linewatch.engines.manifest import load_manifest
    from linewatch.pipeline.overlay import draw_overlay
    from linewatch.profile import default_model

    check_min("--max-batch", args.max_batch, 1)
    model = args.model or default_model()
    manifest, _ = load_manifest(model, verify=False)  # open_engine verifies the sha256
    thresholds = parse_thresholds(args.threshold, manifest.thresholds)
    paths = [Path(p) for p in args.images]
    frames = np.stack([read_frame(p, manifest.input_hw) for p in paths])
    backend = resolve_backend(args.backend)
    engine = open_engine(model, backend=backend, max_batch=args.max_batch, device=args.device,
                         **precision_opts(backend, args.precision))
    results: list[dict[str, Any]] = []
    try:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(paths), engine.max_batch):
            chunk = frames[start : start + engine.max_batch]
            masks, scores = engine.infer(chunk)
            for i in range(len(chunk)):
                path = paths[start + i]
                sc = [float(s) for s in scores[i]]
                row: dict[str, Any] = {
                    "image": str(path),
                    "scores": dict(zip(HEADS, sc, strict=True)),
                    "flags": {h: s >= thresholds[h] for h, s in zip(HEADS, sc, strict=True)},
                }
                if args.out:
                    out_file = args.out / f"{path.stem}.overlay.jpg"
                    overlay = draw_overlay(chunk[i], masks[i], scores=sc)
                    if not cv2.imwrite(str(out_file), overlay):
                        raise UsageError(f"{out_file}: cannot write the overlay")
                    row["overlay"] = str(out_file)
                results.append(row)
        backend, device = engine.name, engine.device
    finally:
        engine.close()

    if args.json:
        doc = {"model": str(model), "backend": backend, "device": device, "thresholds": thresholds, "images": results}
        sys.stdout.write(jsonfile.dumps(doc, indent=2))
        sys.stdout.write("\n")
        return 0
    width = max(len("image"), *(len(r["image"]) for r in results))
    print(f"model {model}  backend {backend}  device {device}")
    print("thresholds: " + ", ".join(f"{h} {t:.2f}" for h, t in thresholds.items()))
    head = f"{'image':<{width}}  " + "  ".join(f"{h:>9}" for h in HEADS) + "  flagged"
    print(head)
    print("-" * len(head))
    for r in results:
        flagged = ", ".join(h for h in HEADS if r["flags"][h]) or "-"
        cells = "  ".join(f"{r['scores'][h]:>9.4f}" for h in HEADS)
        print(f"{r['image']:<{width}}  {cells}  {flagged}")
    if args.out:
        print(f"overlays: {args.out}/")
    return 0
