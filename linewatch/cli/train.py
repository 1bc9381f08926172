"""`linewatch train`: two-stage training of the ResSE network (paper §3). See linewatch/model/train.py."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.args import (
    add_command,
    add_data,
    add_model_args,
    add_train_args,
    model_overrides,
    option_defaults,
    recipe_settings,
)


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "train", run,
        help="train the ResSE network (two stages: segmentation, then classification)",
        description="Two-stage training (paper §3): stage 1 trains the segmentation stage with pixel BCE, "
        "stage 2 freezes it and trains the classification stage. Writes RUN/last.pt, RUN/best.pt, "
        "RUN/log.jsonl, RUN/metrics.json.",
    )
    add_data(p)
    p.add_argument("--out", required=True, help="run folder RUN/")
    p.add_argument("--seg-loss", default="bce", choices=["bce", "mse-sigmoid", "mse-linear"],
                   help="stage 1 loss: bce (sigmoid + CE, the paper), mse-sigmoid, mse-linear (default bce)")
    p.add_argument("--resume", action="store_true", help="continue RUN/last.pt with its own settings (an option that differs from them is refused; --stop-after-epochs, --device, --amp (when typed), --workers, --quiet and --data may change)")
    p.add_argument("--init", metavar="CKPT",
                   help="start from these weights (RUN/best.pt or engines/<name>.pt): fine-tune, e.g. the shipped "
                   "model on your own images; the model options default to the checkpoint's")
    p.add_argument("--stop-after-epochs", type=int, default=0, help="stop after N epochs in this invocation")
    add_train_args(p)
    add_model_args(p)
    p.set_defaults(option_defaults=option_defaults(p))


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
    from linewatch.model.resse import NetworkConfig
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
        cfg = NetworkConfig.from_dict({**init_cfg, **overrides})
        extra = {"init": init, **extra}
    else:
        cfg = NetworkConfig(**overrides)
    return TrainConfig(
        data=args.data, epochs_seg=args.epochs_seg, epochs_cls=args.epochs_cls, batch=args.batch, lr=args.lr,
        crop=not args.no_crop, delta_min=args.delta_min, device=args.device, amp=args.amp, seed=args.seed,
        workers=args.workers, val_split=args.val_split, limit_steps=args.limit_steps,
        eval_every=args.eval_every, quiet=args.quiet, model=cfg.to_dict(), **{**recipe_settings(args), **extra},
    )


MODEL_OPTIONS = ("depth", "resse", "widths", "kernels", "downsample", "class_channels")
"""Options whose dest is a network key (`model.<dest>`)."""


def option_settings(dest: str) -> tuple[str, ...]:
    """The settings (TrainConfig fields; network keys as `model.<key>`) that the option `dest` of `train`
    sets; () for one that sets none (`--resume`)."""
    from dataclasses import fields

    from linewatch.model.train import RECIPES, TrainConfig

    other = {"no_crop": ("crop",), "input_size": ("model.input_height", "model.input_width"),
             "recipe": tuple(RECIPES["paper"]), "resume": ()}
    if dest in other:
        return other[dest]
    if dest in MODEL_OPTIONS:
        return (f"model.{dest}",)
    if dest in {f.name for f in fields(TrainConfig)}:
        return (dest,)
    raise KeyError(f"train: option {dest!r} sets no known setting")  # a new option must be placed here


def asked_settings(args: argparse.Namespace, tc: Any) -> list[str]:
    """The settings this command line sets: those of every option it typed (at whatever value, a default's
    included), and every one in which `tc` differs from the config the same command without its options
    would build. On --resume each must match the run's own (linewatch.model.train.resume_clashes)."""
    from dataclasses import fields

    from linewatch.cli import build_parser
    from linewatch.cli.args import given_dests

    required = ("data", "out", "resume")
    plain = argparse.Namespace(**{**vars(args), **{k: v for k, v in args.option_defaults.items() if k not in required}})
    base = train_config(plain, out=args.out, seg_loss=plain.seg_loss, stop_after_epochs=plain.stop_after_epochs)
    asked = [f.name for f in fields(tc) if f.name != "model" and getattr(tc, f.name) != getattr(base, f.name)]
    asked += [f"model.{k}" for k, v in tc.model.items() if base.model.get(k) != v]
    typed = given_dests(build_parser(), args.argv) if getattr(args, "argv", None) is not None else set()
    for dest in sorted(typed & set(args.option_defaults)):
        asked += [name for name in option_settings(dest) if name not in asked]
    return asked


def run(args: argparse.Namespace) -> int:
    from linewatch.model.train import train

    tc = train_config(args, out=args.out, seg_loss=args.seg_loss, stop_after_epochs=args.stop_after_epochs)
    summary = train(tc, resume=args.resume, asked=asked_settings(args, tc) if args.resume else ())
    if not args.quiet:
        print(f"done: {args.out}/best.pt" + (" (stopped early; --resume continues)" if summary.get("stopped") else ""))
    return 0
