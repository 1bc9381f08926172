"""`linewatch ablate`: the paper's Tables 2, 4 and 5 on a dataset (same split and seed for every row)."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.args import add_command, add_data, add_model_args, add_train_args


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "ablate", run,
        help="reproduce the paper's ablations: depth (Table 2), ResSE placement (4), seg loss (5)",
        description="Train and evaluate every row of the paper's ablation tables with the same split and seed. "
        "Without --folds: trained on the train split, measured on the test split. With --folds K: stratified "
        "K-fold cross-validation over all samples (mean ± std). Finished rows are reused when rerun.",
    )
    add_data(p)
    p.add_argument("--out", required=True, help="output folder (runs, results.json, ablation.md)")
    p.add_argument("--tables", default="2,4,5", help="tables (2, 4, 5) and/or single rows (e.g. resse-v1), comma-separated (default 2,4,5)")
    p.add_argument("--folds", type=int, default=0, help="K-fold cross-validation (0 = use the test split)")
    p.add_argument("--parallel", type=int, default=1,
                   help="(row, fold) runs trained at once in separate processes (default 1); same results")
    p.add_argument("--only-folds", default=None, metavar="K[,K...]",
                   help="with --folds: train only these folds (0-based) of the same split; the other folds' "
                   "finished runs in --out are still reported (default: all folds)")
    add_train_args(p)
    add_model_args(p)


def run(args: argparse.Namespace) -> int:
    from linewatch.cli.train import train_config
    from linewatch.errors import UsageError
    from linewatch.model.ablate import run_ablation

    if args.folds == 1 or args.folds < 0:
        raise UsageError(f"--folds {args.folds}: use 0 (test split) or K >= 2")
    if args.depth or args.resse:
        raise UsageError("--depth/--resse are what the ablation varies; set widths, kernels, input size only")
    only = None
    if args.only_folds is not None:  # numbers here; which ones are allowed, run_ablation says
        try:
            only = [int(k) for k in args.only_folds.split(",") if k.strip()]
        except ValueError:
            raise UsageError(f"--only-folds {args.only_folds!r}: allowed: fold numbers (0 to K-1 of --folds K), "
                             "comma-separated") from None
    base = train_config(args, out=args.out)
    base.model.pop("depth", None)
    base.model.pop("resse", None)
    run_ablation(base, args.out, [t.strip() for t in args.tables.split(",") if t.strip()], args.folds,
                 parallel=args.parallel, only_folds=only)
    return 0
