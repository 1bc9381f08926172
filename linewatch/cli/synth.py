"""`linewatch synth`: write a synthetic battery-cell dataset (folder format) and a preview sheet."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.args import add_command, check_min, floats_arg


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "synth", run,
        help="render synthetic battery-cell surfaces into a dataset folder",
        description="Render COUNT synthetic 512x1224 battery-cell surfaces (anomalies, adhesive bars, "
        "nuisances) with exact masks and labels into DIR (labels.csv, images/, masks/<head>/). "
        "Deterministic: the same --seed and --count give byte-identical files.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not hold a labels.csv yet)")
    p.add_argument("--count", type=int, required=True, metavar="N", help="number of images")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="stream seed (default 0)")
    p.add_argument("--val", type=float, default=0.0, metavar="F", help="share of images in split 'val' (default 0)")
    p.add_argument("--test", type=float, default=0.0, metavar="F", help="share of images in split 'test' (default 0)")
    p.add_argument("--anomaly-rate", type=float, default=None, help="share of images with anomalies (default 0.5)")
    p.add_argument("--adhesive-rate", type=float, default=None, help="share of images with adhesive (default 0.6)")
    p.add_argument("--anomaly-on-adhesive", type=float, default=None, metavar="F",
                   help="share of anomalies centred on an adhesive bar when there is one (default 0: anywhere, "
                   "~6%% of defective cells then have one on glue); a training mix may raise it")
    p.add_argument("--contrast", type=floats_arg(2, "12,30"), default=None, metavar="LO,HI",
                   help="anomaly contrast range in grey levels, drawn log-uniformly (default 12,60); a training mix "
                   "for subtle defects may lower HI")
    p.add_argument("--anomaly-weights", type=floats_arg(3, "0.25,0.25,0.5"), default=None, metavar="S,C,K",
                   help="relative frequency of scratch, cavity, corrosion (default 0.4,0.35,0.25)")
    p.add_argument("--height", type=int, default=None, help="image height (default 512)")
    p.add_argument("--width", type=int, default=None, help="image width (default 1224)")
    p.add_argument("--jobs", type=int, default=1, metavar="J", help="processes rendering in parallel (default 1; same files)")
    p.add_argument("--preview", metavar="PNG", default=None, help="also write a contact sheet of the first images")
    p.add_argument("--preview-count", type=int, default=12, metavar="N", help="tiles in the preview (default 12)")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import time
    from pathlib import Path

    from linewatch.data.preview import write_preview
    from linewatch.data.synth import SynthConfig, write_dataset
    from linewatch.errors import UsageError

    overrides = {
        k: v
        for k, v in {
            "anomaly_rate": args.anomaly_rate,
            "adhesive_rate": args.adhesive_rate,
            "anomaly_on_adhesive": args.anomaly_on_adhesive,
            "contrast": args.contrast,
            "anomaly_weights": args.anomaly_weights,
            "height": args.height,
            "width": args.width,
        }.items()
        if v is not None
    }
    try:
        cfg = dataclasses.replace(SynthConfig(), **overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    check_min("--count", args.count, 1)
    t0 = time.perf_counter()
    out = write_dataset(
        Path(args.out), args.count, args.seed, cfg, val_fraction=args.val, test_fraction=args.test,
        jobs=args.jobs,
    )
    dt = time.perf_counter() - t0
    print(f"wrote {args.count} images to {out} in {dt:.1f} s ({args.count / dt:.1f} img/s)")
    if args.preview:
        write_preview(out, Path(args.preview), args.preview_count)
        print(f"wrote preview {args.preview}")
    return 0
