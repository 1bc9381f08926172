"""`linewatch data check DIR`: check a dataset on disk and print every problem at once."""

from __future__ import annotations

import argparse
from typing import Any


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


def run(args: argparse.Namespace) -> int:
    import json

    from linewatch.data.dataset import check_dataset

    report = check_dataset(args.path)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format(max_problems=args.max_problems), end="")
    return 0 if report.ok else 1
