"""What the `linewatch` subcommands share: their registration, the options several of them take, the
parsers of list-valued options, and the naming of library settings by their options.

- `add_command(subparsers, name, run, help=..., description=...)`: one subcommand whose `run(args)` runs it.
- `add_profile`, `add_data`, `add_model`, `add_backend`, `add_precision`, `add_max_batch`, `add_log_level`, `add_curve`:
  the options of the same name, spelled once (each command passes its own default and help where they differ).
- `add_train_args`, `add_model_args`, `model_overrides`: the training and network options of `train` and `ablate`.
- `floats_arg`, `parse_triple`, `parse_size`: comma- and x-separated values; `check_min`: a lower bound.
- `option_defaults(parser)`: each option's default (what a command line left out); `given_dests(parser,
  argv)`: the options a command line typed, at whatever value.
- `option_names(parser)` and `with_options(message, names)`: a library error names a setting in backquotes
  (`pos_weight`, see `linewatch.errors.SettingError`); the CLI prints the setting's option (--pos-weight)
  in its place. `linewatch.cli.main` does this for every error it prints.

Like every module of `linewatch.cli`, nothing heavy is imported here (no torch, no onnxruntime).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from linewatch.engines.factory import CHOICES as BACKENDS
from linewatch.engines.openvino import PRECISIONS
from linewatch.errors import UsageError

# -- registration ---------------------------------------------------------------------------------


def add_command(subparsers: Any, name: str, run: Callable[[argparse.Namespace], int], *, help: str,
                description: str | None = None, raw: bool = False) -> argparse.ArgumentParser:
    """The subcommand `name` (`run(args)` runs it). `raw`: the description is printed as written (a
    docstring with its own line breaks), not re-wrapped."""
    formatter = argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=description,
                                                       formatter_class=formatter)
    p.set_defaults(func=run)
    return p


# -- options several commands take ----------------------------------------------------------------

OVERRIDE = "override the profile's model.{}"
PRECISION_HELP = OVERRIDE.format("precision") + " (openvino: auto = bf16 where the CPU has it, else f32)"


def add_profile(p: argparse.ArgumentParser, *, required: bool = False,
                help: str = "station profile (default: the embedded demo profile: synthetic line, shipped model)",
                ) -> None:
    p.add_argument("--profile", metavar="TOML", required=required, default=None, help=help)


def add_data(p: argparse.ArgumentParser, *,
             help: str = "dataset folder (any layout linewatch reads: folder format, magnetic-tile, MVTec AD, "
             "class folders)") -> None:
    p.add_argument("--data", required=True, metavar="DIR", help=help)


def add_model(p: argparse.ArgumentParser, *, help: str) -> None:
    """--model ONNX (a Path, default None: the command's own default)."""
    p.add_argument("--model", metavar="ONNX", type=Path, default=None, help=help)


def add_backend(p: argparse.ArgumentParser, *, default: str | None = None, choices: tuple[str, ...] = BACKENDS,
                help: str = OVERRIDE.format("backend")) -> None:
    p.add_argument("--backend", choices=choices, default=default, help=help)


def add_precision(p: argparse.ArgumentParser, *, help: str = PRECISION_HELP) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=None, help=help)


def add_max_batch(p: argparse.ArgumentParser, *, default: int | None = None,
                  help: str = OVERRIDE.format("max_batch")) -> None:
    p.add_argument("--max-batch", type=int, metavar="N", default=default, help=help)


def add_log_level(p: argparse.ArgumentParser, *, default: str, help: str | None = None) -> None:
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=default, help=help)


def add_curve(p: argparse.ArgumentParser) -> None:
    """The client side of a CURVE-encrypted PUB socket (`linewatch subscribe`, `linewatch reload`)."""
    p.add_argument("--curve-server-key", type=Path, default=None, metavar="FILE",
                   help="CURVE: the daemon's public key file (server.key)")
    p.add_argument("--curve-client-cert", type=Path, default=None, metavar="FILE",
                   help="CURVE: this client's secret certificate (<name>.key_secret)")


def check_min(flag: str, value: float | None, minimum: float, unit: str = "") -> None:
    """UsageError `--flag VALUE: must be >= MINIMUM` (None passes: the option was not given)."""
    if value is not None and value < minimum:
        raise UsageError(f"{flag} {value}{unit}: must be >= {minimum}")


# -- list-valued options --------------------------------------------------------------------------


def floats_arg(n: int, example: str) -> Callable[[str], tuple[float, ...]]:
    """argparse type: ``n`` comma-separated numbers -> tuple of floats; the consumer checks their range
    (SynthConfig for synth's options, `check_pos_weight` for train's --pos-weight)."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            vals = tuple(float(v) for v in text.split(","))
        except ValueError:
            vals = ()
        if len(vals) != n:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {n} comma-separated numbers, e.g. {example}")
        return vals

    return parse


def parse_triple(text: str, what: str) -> tuple[int, int, int]:
    """'16,32,64' (or 16x32x64) -> (16, 32, 64); UsageError naming --`what` otherwise."""
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise UsageError(f"--{what} {text!r} is invalid; expected three integers like 16,32,64")
    return vals  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    """--input-size 'HxW' -> (H, W), both positive multiples of 8."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--input-size {text!r} is invalid; expected HxW like 512x1224") from None
    if h <= 0 or w <= 0 or h % 8 or w % 8:
        raise UsageError(f"--input-size {text!r}: height and width must be positive multiples of 8")
    return h, w


# -- training and network options (train, ablate) -------------------------------------------------


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Network options shared by train and ablate (defaults: the NetworkConfig defaults)."""
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
    """The NetworkConfig keys the options of `add_model_args` set."""
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


def pos_weight_arg(text: str) -> tuple[float, ...] | str:
    """--pos-weight: "auto" or two numbers A,H."""
    return "auto" if text.strip() == "auto" else floats_arg(2, "3,1")(text)


def recipe_settings(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields of the recipe options: the named recipe's values, then those given on the
    command line; options neither sets are left out (TrainConfig's defaults)."""
    from linewatch.model.train import RECIPES

    out = dict(RECIPES[args.recipe]) if getattr(args, "recipe", None) else {}
    out.update({k: getattr(args, k) for k in RECIPES["paper"] if getattr(args, k, None) is not None})
    return out


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Training options shared by train and ablate (dests: the TrainConfig fields they set)."""
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
    p.add_argument("--pos-weight", type=pos_weight_arg, default=None, metavar="A,H|auto",
                   help="stage 2: weight of positive labels per head, anomaly,adhesive (default 1,1 = eq. 5); "
                   "above 1 where a miss costs more than a false alarm; auto = negatives/positives per head")
    r = p.add_argument_group("recipe options (docs/model.md, \"Recipe options\"); off = the paper's recipe")
    r.add_argument("--recipe", choices=["paper"], default=None,
                   help="paper: exactly the paper's recipe (every option below off, pos-weight 1,1); options "
                   "given beside it win")
    r.add_argument("--dilate", type=int, default=None, metavar="PX",
                   help="dilate every mask by an odd square of PX model-input pixels (rough annotations; default 0)")
    r.add_argument("--seg-distance-p", type=float, default=None, metavar="P",
                   help="distance-weighted segmentation loss: defect pixels weigh (d/d_max)^P (default 0 = off)")
    r.add_argument("--balance", action="store_true", default=None,
                   help="balanced sampling: defective and defect-free images equally likely in every epoch")
    r.add_argument("--joint-epochs", type=int, default=None, metavar="N",
                   help="the last N stage-2 epochs also train the segmentation stage (cls + seg loss; default 0)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output (log.jsonl is still written)")


# -- settings named by their options --------------------------------------------------------------

_SETTING = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's dest -> the option (`pos_weight` -> `--pos-weight`), the first long spelling where
    several share a dest; over the parser and its subcommands."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, flag in option_names(sub).items():
                    names.setdefault(dest, flag)
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs:
            names.setdefault(action.dest, longs[0])
    return names


def option_defaults(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Each option's dest -> its default (what the command does when the option is left out)."""
    return {a.dest: a.default for a in parser._actions if a.option_strings and a.dest != "help"}


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests that `argv` sets itself, whatever the value (a default's included): `argv` parsed again by
    `parser` (a fresh one: its defaults are suppressed here, in it and in its subcommands)."""
    parsers = [parser]
    while parsers:
        p = parsers.pop()
        p._defaults.clear()  # set_defaults (func, option_names, ...)
        for action in p._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    try:
        return {k for k in vars(parser.parse_args(argv)) if k != "command"}
    except SystemExit:  # argv parsed once already; a parser this cannot reparse tells nothing, never exits
        return set()


def with_options(message: str, names: Mapping[str, str]) -> str:
    """`message` with every backquoted setting that is in `names` replaced by its option
    ("`pos_weight` (0, 1) is invalid" -> "--pos-weight (0, 1) is invalid"); other text as it is."""
    return _SETTING.sub(lambda m: names.get(m.group(1), m.group(0)), message)
