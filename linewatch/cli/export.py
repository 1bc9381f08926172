"""`linewatch export`: ONNX model + manifest + weights from a training checkpoint, with a parity self-check."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.args import add_command


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "export", run,
        help="export a checkpoint to ONNX (uint8 NHWC in; masks, scores out) with its manifest",
        description="Export RUN/best.pt to engines/<name>.onnx, write engines/<name>.json (manifest) and "
        "engines/<name>.pt (weights), then check onnxruntime against PyTorch at batch 1 and 3 "
        "(fails when scores or masks differ by more than 1e-4).",
    )
    p.add_argument("--checkpoint", help="training checkpoint, e.g. RUN/best.pt (required unless --int8 --model)")
    p.add_argument("--out", help="target .onnx path, e.g. engines/resse-v1.onnx (with --checkpoint)")
    q = p.add_argument_group("INT8 for the openvino engine (NNCF with accuracy control; pip install 'linewatch[int8]')")
    q.add_argument("--int8", action="store_true",
                   help="also write <stem>.int8.xml/.bin calibrated on --calib and name it in the manifest")
    q.add_argument("--model", metavar="ONNX", help="quantize this exported model instead of exporting a checkpoint")
    q.add_argument("--calib", metavar="DIR", help="the station's own labelled images (a dataset folder)")
    q.add_argument("--calib-split", default="train", help="split to calibrate on (default train)")
    q.add_argument("--val-split", default="val", help="split the AP drop is measured on (default val)")
    q.add_argument("--max-ap-drop", type=float, default=0.01, metavar="D",
                   help="largest allowed drop of the mean AP_pos on --val-split, absolute (default 0.01)")
    q.add_argument("--max-calib", type=int, default=300, metavar="N", help="calibration frames at most (default 300)")
    p.add_argument("--threshold", type=float, action="append", metavar="T",
                   help="the model's decision threshold (once for both heads, or twice: anomaly then adhesive); "
                   "default: the checkpoint's recommended operating point, else 0.7")
    p.add_argument("--metrics", action="append", metavar="SPLIT=JSON",
                   help="add held-out metrics to the manifest: a metrics.json of `linewatch evaluate --out`, "
                   "e.g. --metrics test=runs/x/heldout/metrics.json (repeatable)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the ORT-vs-PyTorch self-check")


def run(args: argparse.Namespace) -> int:
    from linewatch import HEADS
    from linewatch.errors import UsageError
    from linewatch.model.export import export_onnx, load_checkpoint, load_model

    if args.int8 and not args.calib:
        raise UsageError("--int8 needs --calib DIR (the station's own labelled images)")
    if (args.calib or args.model) and not args.int8:
        raise UsageError("--calib and --model go with --int8")
    if args.model and args.checkpoint:
        raise UsageError("give --checkpoint (export, then quantize) or --model (quantize an exported model), not both")
    if not args.model and not (args.checkpoint and args.out):
        raise UsageError("--checkpoint and --out are required (or --int8 --model M.onnx --calib DIR)")
    if args.model:
        return _int8(args, args.model)
    if args.opset < 17:
        raise UsageError(f"--opset {args.opset}: must be >= 17")
    thresholds = None
    if args.threshold:
        if len(args.threshold) not in (1, 2) or not all(0 < t < 1 for t in args.threshold):
            raise UsageError(f"--threshold {' '.join(f'{t:g}' for t in args.threshold)}: give one or two values in "
                             "(0, 1) (anomaly [adhesive])")
        ts = args.threshold * (2 if len(args.threshold) == 1 else 1)
        thresholds = dict(zip(HEADS, ts, strict=True))
    import json
    from pathlib import Path

    ckpt = load_checkpoint(args.checkpoint)
    metrics = dict(ckpt.get("metrics", {}))
    for item in args.metrics or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise UsageError(f"--metrics {item!r}: expected SPLIT=PATH to an existing metrics.json")
        try:
            ev = json.loads(Path(path).read_text())
            metrics[name] = {"data": ev["data"], "split": ev["split"], "n": ev["n"], **ev["metrics"]}
        except (json.JSONDecodeError, KeyError) as exc:
            raise UsageError(f"--metrics {path}: not a metrics.json of `linewatch evaluate` ({exc})") from exc
    model = load_model(args.checkpoint)
    training = {"checkpoint": str(args.checkpoint), **ckpt.get("training", {})}
    man = export_onnx(model, args.out, training=training, metrics=metrics, thresholds=thresholds,
                      operating_point=ckpt.get("operating_point"), opset=args.opset, self_check=not args.no_check)
    print(f"wrote {args.out} (sha256 {man.sha256[:12]}…), manifest and weights beside it; thresholds "
          + ", ".join(f"{h} {man.thresholds[h]:.4f}" for h in HEADS)
          + (" (recommended on validation)" if man.operating_point else " (given)" if thresholds else " (the paper's 0.7)"))
    if args.int8:
        return _int8(args, args.out)
    return 0


def _int8(args: argparse.Namespace, model: str) -> int:
    """Quantize `model` for the openvino engine (linewatch.engines.quantize) and report the AP drop."""
    import sys

    from linewatch.engines.quantize import quantize_int8

    entry = quantize_int8(model, args.calib, calib_split=args.calib_split, val_split=args.val_split,
                          max_ap_drop=args.max_ap_drop, max_calib=args.max_calib,
                          say=lambda s: print(s, file=sys.stderr, flush=True))
    v = entry["validation"]
    print(f"wrote {entry['model']} beside {model}: mean AP_pos on {v['split']} {v['mean_ap_pos_int8']:.4f} "
          f"(FP32 {v['mean_ap_pos_fp32']:.4f}, allowed drop {v['max_ap_drop']}); run it with precision = \"int8\"")
    return 0
