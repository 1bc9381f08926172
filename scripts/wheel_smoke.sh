#!/usr/bin/env bash
# The wheel on a station, end to end, outside the checkout (a step of .ci/run):
#   build the wheel; install it as docs/operations.md says (scripts/install-station.sh, under a scratch root:
#   <root>/opt/linewatch/venv, <root>/etc/linewatch/demo.toml, the unit verified with systemd-analyze);
#   then, from another directory with no checkout on sys.path, `linewatch demo` and `linewatch run` on the
#   installed profile (its model found among the shipped ones) and on the embedded one.
#   bash scripts/wheel_smoke.sh [FRAMES]        (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-40}
work=$(mktemp -d /tmp/linewatch-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" . 2>/dev/null
wheel=$(ls "$work"/dist/linewatch-*.whl)
bash scripts/install-station.sh --root "$work/root" --wheel "$wheel" --station demo --profile calib/demo.toml
bin="$work/root/opt/linewatch/venv/bin"
cd "$work"   # not the checkout: nothing of it on sys.path
env -u PYTHONPATH "$bin/python" - <<'PY'
import linewatch, linewatch.profile as p
assert "site-packages" in linewatch.__file__, linewatch.__file__
assert p.ENGINES_DIR.name == "shipped" and (p.ENGINES_DIR / "resse-default.onnx").is_file(), p.ENGINES_DIR
print(f"wheel: linewatch from {linewatch.__file__}; shipped models in {p.ENGINES_DIR}")
PY
env -u PYTHONPATH "$bin/linewatch" demo --frames "$frames"
for prof in "--profile $work/root/etc/linewatch/demo.toml" ""; do
  env -u PYTHONPATH "$bin/linewatch" run $prof --max-frames "$frames" --endpoint tcp://127.0.0.1:0 \
    --log-format json --log-level warning
  echo "wheel: linewatch run ${prof:-(embedded profile)} decided $frames frames and drained"
done
echo "wheel: $(basename "$wheel") installs as a station and runs from a fresh venv outside the checkout"
