#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv outside the checkout and run the demo from another
# directory, with no checkout on sys.path, then `linewatch run` on the embedded profile: what an inspection PC
# that gets a wheel does (a step of .ci/run).
#   bash scripts/wheel_smoke.sh [FRAMES]        (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-40}
work=$(mktemp -d /tmp/linewatch-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" . 2>/dev/null
wheel=$(ls "$work"/dist/linewatch-*.whl)
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet "$wheel"
cd "$work"   # not the checkout: nothing of it on sys.path
env -u PYTHONPATH "$work/venv/bin/python" - <<'PY'
import linewatch, linewatch.profile as p
assert "site-packages" in linewatch.__file__, linewatch.__file__
assert p.ENGINES_DIR.name == "shipped" and (p.ENGINES_DIR / "resse-default.onnx").is_file(), p.ENGINES_DIR
print(f"wheel: linewatch from {linewatch.__file__}; shipped models in {p.ENGINES_DIR}")
PY
env -u PYTHONPATH "$work/venv/bin/linewatch" demo --frames "$frames"
env -u PYTHONPATH "$work/venv/bin/linewatch" run --max-frames "$frames" --endpoint tcp://127.0.0.1:0 \
  --log-format json --log-level warning
echo "wheel: linewatch run (embedded profile) decided $frames frames and drained"
echo "wheel: $(basename "$wheel") runs the demo from a fresh venv outside the checkout"
