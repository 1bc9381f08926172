"""Copy out of an ablation's `--out` folder what a later sitting needs to go on where this one stopped.

    python scripts/keep_runs.py .devdata/mt-recipes results/mt-recipes     # keep (before a session ends)
    cp -r results/mt-recipes/. .devdata/mt-recipes/                       # restore (the next session)

A dev box's checkout is new every session and `.devdata/` does not travel; what is committed does. Kept,
per run folder (one holding `log.jsonl` or `eval.json`): its `split.json` (which fold of which split) and
`log.jsonl` (training seconds); a finished run's `eval.json` (what `linewatch ablate` reuses and reports, with
the run's settings and machine); an unfinished run's `last.pt` and `best.pt` (a resumed run needs both: the best
weights so far are restored at the switch to stage 2 and scored at the end). A run is finished when its
`eval.json` reads as JSON (the ablation writes it whole, but a copy may be cut off). At the top: `results.json` and `ablation.md`. A checkpoint
kept earlier in DST for a run that has finished since is removed from DST. Nothing else is copied (a finished
run's checkpoints and per-image scores stay where they are). Prints what it kept.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

TOP = ("results.json", "ablation.md")
FINISHED = ("eval.json", "log.jsonl", "split.json")
UNFINISHED = ("log.jsonl", "split.json", "last.pt", "best.pt")


def _reads(path: Path) -> bool:
    """True when `path` is a whole JSON file."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def keep(src: Path, dst: Path) -> list[Path]:
    """Copy the files a later sitting needs from `src` into `dst` (same relative paths); return them (in dst)."""
    kept: list[Path] = []

    def copy(f: Path) -> None:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
        kept.append(target)

    for name in TOP:
        if (src / name).is_file():
            copy(src / name)
    runs = sorted({f.parent for pattern in ("log.jsonl", "eval.json") for f in src.rglob(pattern)})
    for run in runs:
        finished = _reads(run / "eval.json")
        for name in FINISHED if finished else UNFINISHED:
            if (run / name).is_file():
                copy(run / name)
        if finished:  # checkpoints kept while it was unfinished are no longer needed
            for name in ("last.pt", "best.pt"):
                (dst / run.relative_to(src) / name).unlink(missing_ok=True)
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    if not src.is_dir():
        print(f"keep_runs: {src}: no such folder (an ablation's --out)", file=sys.stderr)
        return 2
    kept = keep(src, dst)
    size = sum(f.stat().st_size for f in kept)
    for f in kept:
        print(f)
    print(f"keep_runs: {len(kept)} files, {size / 1e6:.1f} MB in {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
