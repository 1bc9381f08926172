#!/usr/bin/env bash
# Second GPU call: engine benchmark after the torch pinned-input fix, the whole pipeline on the GPU
# (`linewatch bench`), then the ablation rows the first call did not finish (finished rows in
# .devdata/mt-ablate are reused). Results: $OUT/gpu-bench.log, $OUT/*.json|md, $OUT/mt-ablate.tgz.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD:/tmp/site
LW="python3 -m linewatch"
t0=$(date +%s)
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; git log -1 --format=%h 2>/dev/null; } 
timeout 60 python3 benchmarks/engines.py --variants torch:fp16,torch:fp32 --batches 1,8,32 --min-seconds 1 \
  --max-seconds 3 > "$OUT/engines-gpu.md" 2>/dev/null; cat "$OUT/engines-gpu.md"
echo "+$(( $(date +%s) - t0 )) s"
timeout 75 $LW bench --backend torch --max-batch 32 --duration 15 --warmup 3 --baseline torch --baseline-duration 8 \
  --min-fps 25 --save "$OUT/bench-gpu.json" --quiet > "$OUT/bench-gpu.txt" 2>&1; echo "exit $?"; cat "$OUT/bench-gpu.txt"
echo "+$(( $(date +%s) - t0 )) s"
timeout 40 $LW bench --backend torch --max-batch 8 --fps 2500 --duration 10 --warmup 2 --min-fps 25 \
  --save "$OUT/bench-gpu-2500.json" --quiet > "$OUT/bench-gpu-2500.txt" 2>&1; echo "exit $?"; cat "$OUT/bench-gpu-2500.txt"
echo "+$(( $(date +%s) - t0 )) s"
cp -r .devdata/mt-ablate /tmp/mt-ablate
timeout "${ABLATE_S:-140}" $LW ablate --data .devdata/magnetic-tile-256 --out /tmp/mt-ablate --tables 2,4,5 \
  --input-size 256x256 --device cuda --workers 2 --seed 0 --quiet --parallel 5 > "$OUT/mt-ablate.log" 2>&1
tail -60 "$OUT/mt-ablate.log"
tar czf "$OUT/mt-ablate.tgz" -C /tmp --exclude='*.pt' mt-ablate
echo "all done at +$(( $(date +%s) - t0 )) s"
