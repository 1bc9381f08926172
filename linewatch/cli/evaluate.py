"""`linewatch evaluate`: AP_pos, AP_neg, TPR_t, TNR_t per head of a model on a dataset split."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.args import add_backend, add_command, add_data, add_precision


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "evaluate", run,
        help="the paper's metrics (AP_pos, AP_neg, TPR/TNR at t) of a model on a dataset split",
        description="Evaluate a checkpoint (.pt) or an ONNX model (.onnx with its manifest .json; run with "
        "onnxruntime, or --backend openvino --precision P) on a dataset split. Prints a Markdown table; with --out also writes metrics.json, "
        "metrics.md, scores.csv and PR curves pr_<head>.png.",
    )
    p.add_argument("--model", dest="model_path", required=True, help="RUN/best.pt, engines/<name>.pt, or engines/<name>.onnx")
    add_data(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split (default test)")
    p.add_argument("--out", help="folder for metrics.json, metrics.md, scores.csv, pr_<head>.png")
    p.add_argument("--threshold", type=float, help="t of TPR_t/TNR_t (default: the model's recommended threshold: the manifest's, "
                   "or the checkpoint's operating point; else 0.7)")
    p.add_argument("--batch", type=int, default=8, help="frames per inference call (default 8)")
    p.add_argument("--device", default="cpu", help="device for a .pt checkpoint: cpu | cuda (default cpu)")
    add_backend(p, default="onnxruntime", choices=("onnxruntime", "openvino"),
                help="for an ONNX model: onnxruntime (the FP32 reference, default) or openvino")
    add_precision(p, help="with --backend openvino: auto, f32, bf16, int8 (score what the station runs)")


def run(args: argparse.Namespace) -> int:
    from linewatch.model.evaluate import evaluate
    from linewatch.model.metrics import markdown_table
    from linewatch.model.train import pick_device

    device = str(pick_device(args.device)) if args.model_path.endswith((".pt", ".pth")) else "cpu"
    res = evaluate(args.model_path, args.data, args.split, args.out, args.threshold, args.batch, device=device,
                   backend=args.backend, precision=args.precision)
    print(markdown_table(res["metrics"], f"{args.model_path} on {args.data} / {args.split} ({res['n']} images)"), end="")
    return 0
