"""`linewatch data check DIR`: check a dataset on disk and print every problem at once.
`linewatch data merge --out DIR SRC[:SPLITS[:AS]] ...`: one training folder from several datasets."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch import jsonfile


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="inspect datasets on disk (folder format, magnetic-tile)")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True
    c = sub.add_parser(
        "check",
        help="check a dataset: every problem at once, counts per class/label (exit 1 on errors)",
        description="Check a dataset folder (labels.csv + images/ + masks/<head>/) or a magnetic-tile tree. "
        "Reads every image and mask. Exit status 0 when there are no errors (warnings allowed), 1 otherwise.",
    )
    c.add_argument("path", metavar="DIR", help="dataset folder")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--max-problems", type=int, default=50, help="problems listed per severity (default 50)")
    c.set_defaults(func=run)
    m = sub.add_parser(
        "merge",
        help="one dataset folder from several (links or copies): training mixes, a separate validation set",
        description="Write a folder-format dataset at --out from the samples of several datasets. Each "
        "SRC is DIR, DIR:SPLITS (comma list of the splits to take) or DIR:SPLITS:AS (file them under "
        "split AS), "
        "e.g. `mix:train synth-train:train val5005:val`. Images and masks are symbolic links to the "
        "originals unless --copy. Names must be unique across the sources.",
    )
    m.add_argument(
        "--out", required=True, metavar="DIR", help="new dataset folder (must not hold a labels.csv)"
    )
    m.add_argument(
        "sources", nargs="+", metavar="SRC[:SPLITS[:AS]]", help="dataset folders to take samples from"
    )
    m.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    m.set_defaults(func=run_merge)


def run(args: argparse.Namespace) -> int:

    from linewatch.data.dataset import check_dataset

    report = check_dataset(args.path)
    if args.json:
        print(jsonfile.dumps(report.to_dict(), indent=2))
    else:
        print(report.format(max_problems=args.max_problems), end="")
    return 0 if report.ok else 1


def run_merge(args: argparse.Namespace) -> int:
    from linewatch.data.dataset import merge_datasets

    sources = []
    for spec in args.sources:
        path, _, rest = spec.partition(":")
        splits, _, as_split = rest.partition(":")
        sources.append((path, splits.split(",") if splits else None, as_split or None))
    counts = merge_datasets(args.out, sources, copy=args.copy)
    parts = ", ".join(f"{split} anomaly={lab}: {n}" for (split, lab), n in sorted(counts.items()))
    print(f"wrote {sum(counts.values())} samples to {args.out} ({parts})")
    return 0
