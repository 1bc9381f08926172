"""`linewatch train`: two-stage training of the ResSE network (paper §3). See linewatch/model/train.py."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.synth import floats_arg
from linewatch.errors import UsageError


def parse_triple(text: str, what: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise UsageError(f"--{what} {text!r} is invalid; expected three integers like 16,32,64")
    return vals  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--input-size {text!r} is invalid; expected HxW like 512x1224") from None
    if h <= 0 or w <= 0 or h % 8 or w % 8:
        raise UsageError(f"--input-size {text!r}: height and width must be positive multiples of 8")
    return h, w


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model options shared by train and ablate (defaults: the ModelConfig defaults)."""
    g = p.add_argument_group("model")
    g.add_argument("--depth", choices=["v1", "v2", "v3", "v4"], help="conv layers per block (default v2)")
    g.add_argument("--resse", choices=["none", "v1", "v2", "v3"], help="ResSE placement (default v1)")
    g.add_argument("--widths", help="channels of blocks 1,2,3 (default 16,32,64)")
    g.add_argument("--kernels", help="kernel sizes of blocks 1,2,3 (default 3,3,3)")
    g.add_argument("--downsample", help="per block: max|avg|stride, e.g. stride,max,max (default)")
    g.add_argument("--class-channels", type=int, help="channels of Conv_C (default 16)")
    g.add_argument("--input-size", help="HxW, multiples of 8; images are resized to it (default: chosen from the "
                   "images' aspect, within their own pixel count and at most the shipped model's 512x1224; with "
                   "--init, the checkpoint's)")


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    ov: dict[str, Any] = {}
    if args.depth:
        ov["depth"] = args.depth
    if args.resse:
        ov["resse"] = args.resse
    if args.widths:
        ov["widths"] = parse_triple(args.widths, "widths")
    if args.kernels:
        ov["kernels"] = parse_triple(args.kernels, "kernels")
    if args.downsample:
        parts = tuple(args.downsample.split(","))
        ov["downsample"] = parts if len(parts) > 1 else parts[0]
    if args.class_channels:
        ov["class_channels"] = args.class_channels
    if args.input_size:
        ov["input_height"], ov["input_width"] = parse_size(args.input_size)
    return ov


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Training options shared by train and ablate."""
    p.add_argument("--epochs-seg", type=int, default=200, help="stage 1 epochs (default 200)")
    p.add_argument("--epochs-cls", type=int, default=80, help="stage 2 epochs (default 80)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--no-crop", action="store_true", help="disable the crop augmentation")
    p.add_argument("--delta-min", type=float, default=0.75, help="smallest crop ratio Δ (default 0.75)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision (default auto: bf16 or fp16 on CUDA, off on CPU; bf16 also runs on "
                   "CPUs with native bf16, about 2x faster there)")
    p.add_argument("--seed", type=int, default=0, help="seed of init, shuffling, augmentation (default 0)")
    p.add_argument("--workers", type=int, default=4, help="threads decoding the dataset (default 4)")
    p.add_argument("--val-split", type=float, default=0.1,
                   help="share of train held out for validation when the dataset has no val split (default 0.1)")
    p.add_argument("--limit-steps", type=int, default=0, help="cap steps per epoch (tests, smoke runs)")
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (default 1)")
    p.add_argument("--pos-weight", type=floats_arg(2, "3,1"), default=(1.0, 1.0), metavar="A,H",
                   help="stage 2: weight of positive labels per head, anomaly,adhesive (default 1,1 = eq. 5); "
                   "above 1 where a miss costs more than a false alarm")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output (log.jsonl is still written)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the ResSE network (two stages: segmentation, then classification)",
        description="Two-stage training (paper §3): stage 1 trains the segmentation stage with pixel BCE, "
        "stage 2 freezes it and trains the classification stage. Writes RUN/last.pt, RUN/best.pt, "
        "RUN/log.jsonl, RUN/metrics.json.",
    )
    p.add_argument("--data", required=True, help="dataset folder (folder format or magnetic-tile layout)")
    p.add_argument("--out", required=True, help="run folder RUN/")
    p.add_argument("--seg-loss", default="bce", choices=["bce", "mse-sigmoid", "mse-linear"],
                   help="stage 1 loss: bce (sigmoid + CE, the paper), mse-sigmoid, mse-linear (default bce)")
    p.add_argument("--resume", action="store_true", help="continue RUN/last.pt (its settings win)")
    p.add_argument("--init", metavar="CKPT",
                   help="start from these weights (RUN/best.pt or engines/<name>.pt): fine-tune, e.g. the shipped "
                   "model on your own images; the model options default to the checkpoint's")
    p.add_argument("--stop-after-epochs", type=int, default=0, help="stop after N epochs in this invocation")
    add_train_args(p)
    add_model_args(p)
    p.set_defaults(func=run)


def input_size_for(args: argparse.Namespace, overrides: dict[str, Any], init_hw: tuple[int, int] | None) -> None:
    """Without --input-size (and without --init): an input size chosen from the images, printed. With a
    size, given or the checkpoint's, that stretches the images by more than 10 %: a warning on stderr."""
    import sys

    from linewatch.data.dataset import open_dataset
    from linewatch.data.input_size import (
        ASPECT_TOLERANCE,
        aspect_distortion,
        input_budget,
        suggest_input_size,
        typical_size,
    )

    if getattr(args, "resume", False):
        return  # the run's own settings win
    aspect, pixels = typical_size(open_dataset(args.data).samples)
    budget = input_budget(pixels)
    given = (overrides["input_height"], overrides["input_width"]) if "input_height" in overrides else init_hw
    if given is None:
        overrides["input_height"], overrides["input_width"] = hw = suggest_input_size(aspect, budget)
        if not getattr(args, "quiet", False):
            print(f"input size {hw[0]}x{hw[1]}: chosen from the images' aspect (median W/H {aspect:.3f}) within "
                  f"{budget:,} pixels (the images' own, at most the shipped model's; --input-size sets it)",
                  flush=True)
    elif aspect_distortion(aspect, given) > ASPECT_TOLERANCE:
        sug = suggest_input_size(aspect, budget)
        print(f"warning: the input size {given[0]}x{given[1]} stretches the images (median W/H {aspect:.3f}) by "
              f"{aspect_distortion(aspect, given):.0%}; --input-size {sug[0]}x{sug[1]} keeps their aspect",
              file=sys.stderr, flush=True)


def train_config(args: argparse.Namespace, **extra: Any) -> Any:
    from linewatch.model.resse import ModelConfig
    from linewatch.model.train import TrainConfig

    overrides = model_overrides(args)
    init = getattr(args, "init", None)
    init_cfg = None
    if init:
        from linewatch.model.train import load_init

        init_cfg = load_init(init)["config"]
    init_hw = (int(init_cfg["input_height"]), int(init_cfg["input_width"])) if init_cfg and "input_height" in init_cfg \
        else None
    input_size_for(args, overrides, init_hw)
    if init_cfg is not None:
        cfg = ModelConfig.from_dict({**init_cfg, **overrides})
        extra = {"init": init, **extra}
    else:
        cfg = ModelConfig(**overrides)
    return TrainConfig(
        data=args.data, epochs_seg=args.epochs_seg, epochs_cls=args.epochs_cls, batch=args.batch, lr=args.lr,
        crop=not args.no_crop, delta_min=args.delta_min, device=args.device, amp=args.amp, seed=args.seed,
        workers=args.workers, val_split=args.val_split, limit_steps=args.limit_steps,
        eval_every=args.eval_every, pos_weight=args.pos_weight, quiet=args.quiet, model=cfg.to_dict(), **extra,
    )


def run(args: argparse.Namespace) -> int:
    from linewatch.model.train import train

    tc = train_config(args, out=args.out, seg_loss=args.seg_loss, stop_after_epochs=args.stop_after_epochs)
    summary = train(tc, resume=args.resume)
    if not args.quiet:
        print(f"done: {args.out}/best.pt" + (" (stopped early; --resume continues)" if summary.get("stopped") else ""))
    return 0
