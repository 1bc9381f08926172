"""`linewatch calibrate`: per-head decision thresholds of one station from labelled frames (linewatch/calibrate.py).

Runs the model (any backend) over a split of a dataset folder, then picks per head the threshold
that maximises balanced accuracy ((TPR + TNR) / 2, the midpoint of the best gap between scores), or
with `--target-tnr` the lowest threshold whose TNR (share of negatives with score < t) reaches the
target. Prints the proposal beside the current thresholds; `--write` puts it into the profile's
`[decision]` thresholds (a textual edit: comments and every other line stay). Frames become the
model input by the one rule of training and the line (`linewatch.preprocess`; docs/architecture.md,
"Model input").
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from linewatch.cli.args import add_backend, add_command, add_data, add_model, add_precision, add_profile


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "calibrate", run,
                    help="propose per-head thresholds for a station from labelled frames (--write puts them in the "
                    "profile)",
                    description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    add_profile(p, required=True, help="station profile to calibrate (and rewrite)")
    add_data(p, help="labelled dataset folder (labels.csv + images/)")
    add_model(p, help="model (default: the profile's model.path)")
    p.add_argument("--split", default="val", help="split of the dataset to calibrate on (default: val)")
    p.add_argument("--camera", default=None, metavar="ID",
                   help="the labelled frames are this camera's raw full frames: its profile `roi` is cropped first, "
                   "as on the line (default: frames taken as cropped already, as the station record keeps them)")
    add_backend(p, default="onnxruntime", help="engine backend (default onnxruntime: every backend agrees within 1e-3)")
    add_precision(p, help="with --backend openvino: auto, f32, bf16, int8 (calibrate on what the station runs)")
    p.add_argument("--target-tnr", type=float, default=None, metavar="R",
                   help="instead of the best balanced accuracy: the lowest threshold with TNR >= R (e.g. 0.99)")
    p.add_argument("--write", action="store_true", help="write the proposal into the profile's [decision] thresholds")
    p.add_argument("--write-manifest", action="store_true",
                   help="instead: make the proposal the model's recommended thresholds (its manifest's: where a "
                   "profile that leaves a head out decides), for a model trained before training chose them; "
                   "only from the validation split (--split val, the default)")


def _pct(v: float) -> str:
    return "   n/a" if math.isnan(v) else f"{100 * v:5.1f}%"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from linewatch.calibrate import calibrate, check_target_tnr, save_thresholds, score_split
    from linewatch.errors import UsageError
    from linewatch.profile import load_profile

    check_target_tnr(args.target_tnr)
    if args.write and args.write_manifest:
        raise UsageError("--write (the station's profile) or --write-manifest (the model's own thresholds), not both")
    if args.write_manifest and args.split != "val":
        raise UsageError(f"--write-manifest --split {args.split}: a model's recommended thresholds come from its "
                         "validation part only (allowed: --split val); a station's own labelled frames of another "
                         "split go into its profile with --write")
    prof_path = Path(args.profile)
    profile = load_profile(prof_path)
    model = args.model or profile.model_path()
    roi: tuple[int, int, int, int] | None = None
    if args.camera is not None:
        ids = [c.id for c in profile.camera]
        if args.camera not in ids:
            raise UsageError(f"--camera {args.camera!r}: no such camera in {prof_path}; allowed: {', '.join(ids)}")
        cam_roi = profile.camera[ids.index(args.camera)].roi
        roi = (cam_roi[0], cam_roi[1], cam_roi[2], cam_roi[3]) if cam_roi is not None else None
    scores, labels = score_split(model, args.data, args.split, backend=args.backend, precision=args.precision,
                                 max_batch=profile.model.max_batch, roi=roi)
    from linewatch.pipeline.swap import model_thresholds

    heads = calibrate(scores, labels, profile.decision.thresholds.resolve(model_thresholds(model)), args.target_tnr)

    rule = f"TNR >= {args.target_tnr:.3f}" if args.target_tnr is not None else "best balanced accuracy"
    crop = f", camera {args.camera}'s roi {list(roi)}" if roi is not None else ""
    print(f"calibration of {prof_path} on {args.data} split {args.split!r} ({len(scores)} frames{crop}), {model.name}, "
          f"{rule}")
    print(f"{'head':<9} {'pos':>5} {'neg':>5}  {'current':>8} {'TPR':>6} {'TNR':>6}  {'proposed':>8} {'TPR':>6} {'TNR':>6}")
    for c in heads:
        cur = f"{c.head:<9} {c.positives:>5} {c.negatives:>5}  {c.current:>8.4f} {_pct(c.current_rates[0])} " \
              f"{_pct(c.current_rates[1])}  "
        if c.proposed is None or c.proposed_rates is None:
            print(f"{cur}{'(kept)':>8}  needs labelled positives and negatives")
        else:
            print(f"{cur}{c.proposed:>8.4f} {_pct(c.proposed_rates[0])} {_pct(c.proposed_rates[1])}")
    if args.write_manifest:
        from linewatch.calibrate import RECOMMEND_RULE, save_manifest_thresholds

        how = RECOMMEND_RULE if args.target_tnr is None else f"lowest threshold with TNR >= {args.target_tnr:g}"
        new = save_manifest_thresholds(model, heads, how, f"{args.data}:{args.split}")
        print("wrote the model's recommended thresholds " + " ".join(f"{h}={t:.4f}" for h, t in new.items())
              + f" into the manifest of {model}")
        return 0
    if not args.write:
        print("not written (add --write to update the profile)")
        return 0
    proposal = {c.head: c.proposed for c in heads if c.proposed is not None}  # a kept head is not written
    if not proposal:
        print("nothing written: no head has labelled positives and negatives here")
        return 0
    save_thresholds(prof_path, proposal)
    print("wrote thresholds " + " ".join(f"{h}={t:.4f}" for h, t in proposal.items()) + f" to {prof_path}; "
          "a running daemon applies them on SIGHUP (systemctl reload linewatch@<station>)")
    return 0
