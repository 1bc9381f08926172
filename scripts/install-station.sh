#!/usr/bin/env bash
# Install linewatch as a systemd service, as docs/operations.md ("Installing as a systemd service") says:
#   sudo bash scripts/install-station.sh --wheel dist/linewatch-*.whl --station line3 \
#        --profile calib/example-station.toml [--model engines/line3.onnx] [--extras camera] [--enable]
#
#   /opt/linewatch/venv                          the venv, linewatch installed from the wheel
#   /etc/linewatch/<station>.toml                the station profile (root:linewatch 0640)
#   /var/lib/linewatch/engines/                  the station's models (the profile's [model] store)
#   /etc/systemd/system/linewatch@.service       the unit; `systemd-analyze verify` checks the instance
#
# --root DIR installs under DIR instead of / (a dry run the CI does: no user is created, nothing is
# enabled, ownership is left alone). --enable (only with the real root) enables and starts the instance.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=/ wheel= station= profile= model= extras= enable=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --wheel) wheel=$2; shift 2 ;;
    --station) station=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --enable) enable=1; shift ;;
    *) echo "install-station: unknown option $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$wheel" ] && [ -f "$wheel" ] || { echo "install-station: --wheel FILE.whl is required (pip wheel --no-deps -w dist .)" >&2; exit 2; }
[[ "$station" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "install-station: --station NAME is required (letters, digits, _ . -)" >&2; exit 2; }
[ -n "$profile" ] && [ -f "$profile" ] || { echo "install-station: --profile FILE.toml is required" >&2; exit 2; }
real=0; [ "$root" = / ] && real=1
R=${root%/}
say() { echo "install-station: $*"; }
own() { [ "$real" = 1 ] && chown "$@" || true; }

# 1. a dedicated system user; "video" gives access to USB3 Vision cameras and GPU device nodes
if [ "$real" = 1 ] && ! id linewatch >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/linewatch --shell /usr/sbin/nologin --groups video linewatch
fi
# 2. the software
python3 -m venv "$R/opt/linewatch/venv"
"$R/opt/linewatch/venv/bin/python" -m pip install --quiet --upgrade pip
spec="$wheel"; [ -n "$extras" ] && spec="$wheel[$extras]"
"$R/opt/linewatch/venv/bin/python" -m pip install --quiet "$spec"
say "venv $R/opt/linewatch/venv: $("$R/opt/linewatch/venv/bin/linewatch" --version 2>/dev/null || echo linewatch)"
# 3. the model store and the profile
install -d -m 0750 "$R/var/lib/linewatch/engines"; own linewatch:linewatch "$R/var/lib/linewatch" "$R/var/lib/linewatch/engines"
if [ -n "$model" ]; then
  install -m 0640 "$model" "${model%.onnx}.json" "$R/var/lib/linewatch/engines/"
  own linewatch:linewatch "$R/var/lib/linewatch/engines/"*
fi
install -d -m 0750 "$R/etc/linewatch"; own root:linewatch "$R/etc/linewatch"
install -m 0640 "$profile" "$R/etc/linewatch/$station.toml"; own root:linewatch "$R/etc/linewatch/$station.toml"
# 4. the unit, verified as the instance systemd will run
install -d "$R/etc/systemd/system"
install -m 0644 "$here/systemd/linewatch@.service" "$R/etc/systemd/system/linewatch@.service"
if command -v systemd-analyze >/dev/null 2>&1; then
  out=$(systemd-analyze verify "$R/etc/systemd/system/linewatch@$station.service" 2>&1) || { echo "$out" >&2; exit 1; }
  if echo "$out" | grep -q "linewatch"; then echo "$out" >&2; exit 1; fi
  say "systemd-analyze verify linewatch@$station.service: ok"
else
  say "systemd-analyze not found: unit not verified (Debian: apt-get install systemd)"
fi
if [ "$real" = 1 ] && [ "$enable" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now "linewatch@$station.service"
  say "linewatch@$station.service enabled and started: systemctl status linewatch@$station.service"
else
  say "installed under $root; start with: systemctl daemon-reload && systemctl enable --now linewatch@$station.service"
fi
