#!/usr/bin/env bash
# One call on a lent GPU machine (H100/H200): the shipped default model on synthetic battery surfaces,
# the magnetic-tile 5-fold protocol, and the paper's ablation tables on magnetic-tile — trainings share
# the GPU as separate processes. Everything it measured comes back as $OUT/results.tgz + logs.
#
#   needs: python3 with torch (CUDA), onnx, onnxruntime, opencv; the repo as working directory;
#          .devdata/magnetic-tile-256 (the magnetic-tile images resized to 256x256, see docs/results.md)
set -u
OUT=${OUT:-/tmp/gpu-out}
D=${D:-/tmp/lw}
BUDGET=${BUDGET:-330}          # seconds the trainings may take at most
SYN_TRAIN=${SYN_TRAIN:-1000}   # synthetic images for training (10% of them validation)
HELDOUT=${HELDOUT:-400}        # held-out synthetic images (other seed)
DEV=${DEV:-cuda}
TRAIN_ARGS=${TRAIN_ARGS:-}     # e.g. "--epochs-seg 1 --epochs-cls 1 --limit-steps 2" for a smoke run
mkdir -p "$OUT" "$D"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
LW="python3 -m linewatch"
MT=.devdata/magnetic-tile-256
t0=$(date +%s)
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import torch, onnxruntime, numpy; print('torch', torch.__version__, 'ort', onnxruntime.__version__, 'numpy', numpy.__version__)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

$LW synth --out $D/synth-train --count "$SYN_TRAIN" --seed 1001 --val 0.1 --jobs 12 > "$OUT/synth.log" 2>&1 &
$LW synth --out $D/synth-heldout --count "$HELDOUT" --seed 2002 --test 1.0 --jobs 4 >> "$OUT/synth.log" 2>&1 &
wait
echo "synth done at +$(( $(date +%s) - t0 )) s"; tail -2 "$OUT/synth.log"

timeout "$BUDGET" $LW train --data $D/synth-train --out $D/runs/resse-synth --device $DEV $TRAIN_ARGS --workers 4 --quiet \
  > "$OUT/train-synth.log" 2>&1 &
p_syn=$!
timeout "$BUDGET" $LW ablate --data $MT --out $D/mt-5fold --tables resse-v1 --folds 5 --input-size 256x256 \
  --device $DEV $TRAIN_ARGS --workers 2 --seed 0 --quiet --parallel 5 > "$OUT/mt-5fold.log" 2>&1 &
timeout "$BUDGET" $LW ablate --data $MT --out $D/mt-ablate --tables 2,4,5 --input-size 256x256 \
  --device $DEV $TRAIN_ARGS --workers 2 --seed 0 --quiet --parallel 5 > "$OUT/mt-ablate.log" 2>&1 &
while kill -0 $p_syn 2>/dev/null; do
  sleep 30; echo "+$(( $(date +%s) - t0 )) s: $(tail -c 300 $D/runs/resse-synth/log.jsonl 2>/dev/null | tail -1 | cut -c1-200)"
done
wait
echo "trainings done at +$(( $(date +%s) - t0 )) s"

R=$D/runs/resse-synth
if [ -f $R/best.pt ]; then
  $LW evaluate --model $R/best.pt --data $D/synth-heldout --device $DEV --out $R/heldout > "$OUT/eval-synth.log" 2>&1
  $LW export --checkpoint $R/best.pt --out $D/engines/resse-default.onnx --metrics test=$R/heldout/metrics.json \
    > "$OUT/export.log" 2>&1
  $LW evaluate --model $D/engines/resse-default.onnx --data $D/synth-heldout --out $R/heldout-onnx \
    > "$OUT/eval-onnx.log" 2>&1
  tail -30 "$OUT/eval-onnx.log"
fi
tail -40 "$OUT/mt-5fold.log"

# GPU engine checks, after the trainings so that nothing else runs on the GPU: the parity tests
# (torch CUDA FP16/FP32 against the FP32 reference) and the engine benchmark. The runtime's own
# dependencies travel as wheels in .whl (the image has torch, onnxruntime, opencv, numpy).
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
timeout 120 python3 -m pytest -q -rs -p no:cacheprovider tests/test_engines.py tests/test_engines_trt.py \
  > "$OUT/gpu-tests.log" 2>&1; tail -8 "$OUT/gpu-tests.log"
M=$D/engines/resse-default.onnx; [ -f $M ] || M=""
timeout 150 python3 benchmarks/engines.py ${M:+--model $M} --variants onnxruntime,torch:fp16,torch:fp32 \
  --batches 1,8,32 --min-seconds 1 --max-seconds 4 > "$OUT/engines-bench.md" 2> "$OUT/engines-bench.err"
cat "$OUT/engines-bench.md"; tail -3 "$OUT/engines-bench.err"
tar czf "$OUT/results.tgz" -C $D --exclude='last.pt' --exclude='mt-*/*/*.pt' --exclude='mt-*/*/*/*.pt' \
  runs engines mt-5fold mt-ablate 2>/dev/null
ls -la "$OUT"; echo "all done at +$(( $(date +%s) - t0 )) s"
