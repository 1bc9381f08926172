"""Write synthetic battery cells in the MVTec AD layout (a stand-in for "a folder of your own images").

    python scripts/mvtec_demo.py OUT [--good 60] [--bad 30] [--size 128x304] [--seed 7]

OUT/train/good/ holds most defect-free cells, OUT/test/good/ the rest, OUT/test/<kind>/ the defective
ones by kind (scratch, cavity, corrosion), OUT/ground_truth/<kind>/<name>_mask.png their masks (0/255).
Used by docs/your-own-line.md (its recorded run) and by tests/test_guide.py (the same commands, small).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linewatch.data.synth import SynthConfig, render  # noqa: E402


def write_mvtec(out: Path, good: int, bad: int, hw: tuple[int, int], seed: int = 7) -> Path:
    cfg = SynthConfig(height=hw[0], width=hw[1], anomaly_rate=0.5)
    n_good = n_bad = 0
    index = 0
    while n_good < good or n_bad < bad:
        s = render(seed, index, cfg)
        index += 1
        img = cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR)
        if s.labels[0] and n_bad < bad:
            kind = next((k for k in ("scratch", "cavity", "corrosion") if k in s.kinds), "defect")
            (out / "test" / kind).mkdir(parents=True, exist_ok=True)
            (out / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / "test" / kind / f"{n_bad:03d}.png"), img)
            cv2.imwrite(str(out / "ground_truth" / kind / f"{n_bad:03d}_mask.png"), s.masks[0] * np.uint8(255))
            n_bad += 1
        elif not s.labels[0] and n_good < good:
            part = "train" if n_good < int(0.7 * good) else "test"
            (out / part / "good").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / part / "good" / f"{n_good:03d}.png"), img)
            n_good += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--good", type=int, default=60)
    ap.add_argument("--bad", type=int, default=30)
    ap.add_argument("--size", default="128x304", help="HxW (default 128x304)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    write_mvtec(args.out, args.good, args.bad, (h, w), args.seed)
    print(f"wrote {args.good} defect-free and {args.bad} defective cells ({h}x{w}) to {args.out} (MVTec AD layout)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
