"""`linewatch data check DIR`: check a dataset on disk and print every problem at once.
`linewatch data merge --out DIR SRC[:SPLITS[:AS]] ...`: one training folder from several datasets.
`linewatch data convert SRC --out DIR`: any layout linewatch reads, written as the folder format."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch import jsonfile
from linewatch.cli.args import add_command
from linewatch.data.dataset import LAYOUTS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="check, convert and merge datasets (folder format, magnetic-tile, MVTec AD, "
                              "class folders)")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True
    c = add_command(
        sub, "check", run,
        help="check a dataset: every problem at once, counts per class/label (exit 1 on errors)",
        description="Check a dataset folder (labels.csv + images/ + masks/<head>/), a magnetic-tile tree, an "
        "MVTec AD category (train/good, test/<defect>, ground_truth/) or class folders (good|ok/, bad|ng/). "
        "Reads every image and mask. Exit status 0 when there are no errors (warnings allowed), 1 otherwise.",
    )
    c.add_argument("path", metavar="DIR", help="dataset folder")
    c.add_argument("--layout", choices=LAYOUTS, default=None, help="the layout (default: detected)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--max-problems", type=int, default=50, help="problems listed per severity (default 50)")
    m = add_command(
        sub, "merge", run_merge,
        help="one dataset folder from several (links or copies): training mixes, a separate validation set",
        description="Write a folder-format dataset at --out from the samples of several datasets. Each "
        "SRC is DIR, DIR:SPLITS (comma list of the splits to take) or DIR:SPLITS:AS (file them under "
        "split AS), "
        "e.g. `mix:train synth-train:train val5005:val`. Images and masks are symbolic links to the "
        "originals unless --copy. Names must be unique across the sources.",
    )
    m.add_argument("--out", required=True, metavar="DIR", help="new dataset folder (must not hold a labels.csv)")
    m.add_argument("sources", nargs="+", metavar="SRC[:SPLITS[:AS]]", help="dataset folders to take samples from")
    m.add_argument("--copy", action="store_true", help="copy the files instead of linking them")
    v = add_command(
        sub, "convert", run_convert,
        help="write a dataset of any layout linewatch reads as the folder format (labels.csv to edit)",
        description="Read SRC (folder format, magnetic-tile, MVTec AD category, class folders; --layout or "
        "detected) and write it at --out as the folder format: images/, masks/anomaly/ (and adhesive), "
        "labels.csv with name, split, anomaly, adhesive, group. Layouts without a split of their own get a "
        "stratified one (written into labels.csv, to edit). Files are copied unless --link.",
    )
    v.add_argument("source", metavar="SRC", help="the dataset to convert")
    v.add_argument("--out", required=True, metavar="DIR", help="new dataset folder (must not hold a labels.csv)")
    v.add_argument("--layout", choices=LAYOUTS, default=None, help="the layout of SRC (default: detected)")
    v.add_argument("--link", action="store_true", help="symbolic links to the originals instead of copies")


def run(args: argparse.Namespace) -> int:
    from linewatch.data.check import check_dataset

    report = check_dataset(args.path, layout=args.layout)
    if args.json:
        print(jsonfile.dumps(report.to_dict(), indent=2))
    else:
        print(report.format(max_problems=args.max_problems), end="")
    return 0 if report.ok else 1


def run_merge(args: argparse.Namespace) -> int:
    from linewatch.data.write import merge_datasets

    sources = []
    for spec in args.sources:
        path, _, rest = spec.partition(":")
        splits, _, as_split = rest.partition(":")
        sources.append((path, splits.split(",") if splits else None, as_split or None))
    counts = merge_datasets(args.out, sources, copy=args.copy)
    parts = ", ".join(f"{split} anomaly={lab}: {n}" for (split, lab), n in sorted(counts.items()))
    print(f"wrote {sum(counts.values())} samples to {args.out} ({parts})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from linewatch.data.dataset import open_dataset
    from linewatch.data.write import merge_datasets

    kind = open_dataset(args.source, layout=args.layout).kind
    counts = merge_datasets(args.out, [(args.source, None, None)], copy=not args.link, layout=args.layout)
    parts = ", ".join(f"{split} anomaly={lab}: {n}" for (split, lab), n in sorted(counts.items()))
    print(f"converted {args.source} ({kind}) to {args.out}: {sum(counts.values())} samples ({parts}); "
          f"check it with `linewatch data check {args.out}`")
    return 0
