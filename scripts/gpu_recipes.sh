#!/usr/bin/env bash
# Issue 17 items 4-5 on one CUDA GPU, in one device call (at most 10 minutes): the magnetic-tile 5-fold
# recipe comparison of docs/results.md ("Magnetic-tile 5-fold: recipe comparison") — its stored command with
# `--device cuda`, every (row, fold) a process of its own sharing the GPU (`--parallel`). A (row, fold) whose
# eval.json exists (carried in $RUNS) is reused, an interrupted one resumes from its last.pt, so the table
# can be finished over several calls and several machines (the CPU runs of the dev box included: same
# split, seed and schedule; FP32 on both, `--amp off`).
#
# What comes back: $OUT/mt-recipes.tgz (scripts/keep_runs.py: every run folder's eval.json and log.jsonl, and
# its last.pt and best.pt while it has no eval.json: unpack it over .devdata/ and carry .devdata/mt-recipes
# next time), $OUT/summary.txt (each row's scored folds), the logs.
#
#   device call: carry [".devdata/magnetic-tile-256", ".devdata/mt-recipes"] (made by
#       scripts/magnetic_tile_256.py; 35 MB + ~2.9 MB per unfinished run), command
#       `OUT=$OUT bash scripts/gpu_recipes.sh`
#   rows: ROWS (default the three base rows, in the stored order); the option rows once rule 2 has chosen
#       the base, e.g. ROWS=resse-v3+balance,resse-v3+posauto,resse-v3+dilate7,resse-v3+dist2,resse-v3+joint20
#   smoke run on a CPU: DEV=cpu FOLDS=2 PARALLEL=2 RUNS=/tmp/mt-smoke OUT=/tmp/mt-smoke-out \
#       TRAIN_ARGS="--epochs-seg 1 --epochs-cls 1 --limit-steps 1" bash scripts/gpu_recipes.sh
set -u
OUT=${OUT:-/tmp/gpu-out}
DEV=${DEV:-cuda}
AMP=${AMP:-off}                # the CPU runs are FP32; keep every fold of the table alike
ROWS=${ROWS:-resse-v3,baseline-v2,resse-v1}
FOLDS=${FOLDS:-5}
PARALLEL=${PARALLEL:-15}       # (row, fold) processes at once: three rows x five folds in one wave
BUDGET=${BUDGET:-540}          # seconds the ablation may run (the device call's limit is 600)
TRAIN_ARGS=${TRAIN_ARGS:-}     # empty = the protocol's 200 + 80 epochs
RUNS=${RUNS:-.devdata/mt-recipes}
MT=${MT:-.devdata/magnetic-tile-256}
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ls .whl/*.whl > /dev/null 2>&1; then  # what the image lacks, carried as wheels (the device tool's README)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
t0=$(date +%s)
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; nproc
  git log -1 --format='commit %h %s' 2>/dev/null
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  echo "rows $ROWS; folds $FOLDS; parallel $PARALLEL; budget $BUDGET s; amp $AMP; train args '$TRAIN_ARGS'"
  echo "finished before this call: $(find "$RUNS" -name eval.json | wc -l) (row, fold) runs"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
if [ ! -d "$MT" ]; then
  echo "no $MT: make it with scripts/magnetic_tile_256.py and carry it" >&2
  exit 2
fi

# timeout signals its whole process group: the pool's worker processes stop with the ablation
timeout -k 20 "$BUDGET" python3 -m linewatch ablate --data "$MT" --out "$RUNS" --tables "$ROWS" --folds "$FOLDS" \
  --input-size 256x256 --device "$DEV" --amp "$AMP" --workers 1 --seed 0 --quiet --recipe paper \
  --parallel "$PARALLEL" $TRAIN_ARGS > "$OUT/ablate.log" 2>&1
rc=$?
echo "ablate rc $rc at +$(( $(date +%s) - t0 )) s (124: stopped by the budget; rerun to resume)"
tail -5 "$OUT/ablate.log"

python3 - "$RUNS" <<'EOF' | tee "$OUT/summary.txt"
"""Each row's scored folds (anomaly head)."""
import json, sys
from pathlib import Path

from linewatch.model.ablate import METRIC_KEYS, _metric

runs = Path(sys.argv[1])
for row in sorted(p for p in runs.iterdir() if p.is_dir()):
    cells = []
    for fold in sorted(row.glob("fold*"), key=lambda f: int(f.name[4:])):
        ev = fold / "eval.json"
        if ev.is_file():
            r = json.loads(ev.read_text())
            cells.append(fold.name + " " + " ".join(f"{k} {_metric(r, 'anomaly', k):.4g}" for k in METRIC_KEYS))
        else:
            last = [json.loads(x) for x in (fold / "log.jsonl").read_text().splitlines()[-1:]] \
                if (fold / "log.jsonl").is_file() else []
            cells.append(f"{fold.name} at epoch {last[0]['epoch']}/{last[0]['epochs']}" if last else f"{fold.name} -")
    print(f"{row.name}: " + "; ".join(cells))
EOF
# what a later call (or the dev box) needs to go on: scripts/keep_runs.py's choice (an unfinished run's last.pt
# and best.pt both), archived
rm -rf "$OUT/keep" && python3 scripts/keep_runs.py "$RUNS" "$OUT/keep/mt-recipes" | tail -1
tar -czf "$OUT/mt-recipes.tgz" -C "$OUT/keep" mt-recipes && rm -rf "$OUT/keep"
du -h "$OUT/mt-recipes.tgz"
echo "done at +$(( $(date +%s) - t0 )) s"
