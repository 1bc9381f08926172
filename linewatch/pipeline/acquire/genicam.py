"""GenICam / GenTL cameras through harvesters (the optional `camera` extra).

Its settings are the profile's `[[camera]]` table (`linewatch.profile.GenicamCamera`, keys in
docs/operations.md): `GenicamCamera(...).make_source(profile)` (the `.cti` resolved by the profile)
or `GenicamSource(camera_table, cti=..., reconnect_min_s=..., reconnect_max_s=...)`. The source:

* loads the GenTL producer (`.cti`) and selects the device by index (int) or by serial number,
  id or user-defined name (str). With `device=None` the producer must expose exactly one device;
* applies the GenICam features at start, in this order: PixelFormat, Width, Height, OffsetX,
  OffsetY, AcquisitionFrameRateEnable (set true automatically when AcquisitionFrameRate is given
  and the device has it), AcquisitionFrameRate, ExposureAuto, ExposureTime, GainAuto, Gain, then
  any other named feature in the given order. A feature the device does not have, a read-only
  one, or a value the node refuses is a *problem*, reported by name (with the allowed values /
  range). `strict=True` (default): `start()` raises SourceError listing every problem;
  `strict=False`: each problem is a warning and the camera runs with what it accepted;
* converts Mono8, RGB8, BGR8, RGBa8, BGRa8 and BayerRG8 frames to RGB straight into the ring
  slot (ROI crop + resize, `acquire.frames.FrameWriter`);
* stamps `t_capture_ns` with the host clock when the frame arrives (`timestamps="host"`,
  default), or maps the camera's own timestamp to the host clock (`timestamps="device"`: offset
  = the smallest host-minus-device difference seen since the device was opened; falls back to
  the host clock when the device has no timestamps);
* turns gaps in the camera's frame ids into DROP_LOST records (frames the camera took that never
  reached the host still get a fail-safe decision);
* treats a failed fetch, or no frame for `down_after_s` seconds (0 = never), as a lost device:
  state "down", close, reopen with exponential backoff from `reconnect_min_s` to `reconnect_max_s`,
  features applied again, `counters.reconnects` counted.

Several cameras on one producer share one `Harvester` (a GenTL producer can be loaded once per
process): the module keeps one per `.cti` path and re-enumerates devices only while none of its
cameras is open.

For tests and demos without a camera: the `genicam` wheel ships `viky.cti`, a producer with
three simulated cameras (up to 800x800, up to 200 fps, RGBa8 / Mono8); `find_bundled_cti()`.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linewatch.pipeline.acquire.base import BaseSource, Grab, NoFrame, SourceDown, SourceError
from linewatch.pipeline.acquire.frames import CorruptFrame, as_image

if TYPE_CHECKING:
    from linewatch.profile import GenicamCamera

FEATURE_ORDER = (
    "PixelFormat",
    "Width",
    "Height",
    "OffsetX",
    "OffsetY",
    "AcquisitionFrameRateEnable",
    "AcquisitionFrameRate",
    "ExposureAuto",
    "ExposureTime",
    "GainAuto",
    "Gain",
)
_MAX_GAP = 10_000  # a frame-id jump larger than this is a counter reset, not lost frames


def find_bundled_cti() -> Path | None:
    """The GenTL producer shipped in the `genicam` wheel (viky.cti, simulated cameras), or None."""
    spec = importlib.util.find_spec("genicam")
    if spec is None or not spec.submodule_search_locations:
        return None
    found: list[Path] = []
    for loc in spec.submodule_search_locations:
        found.extend(sorted(Path(loc).rglob("*.cti")))
    if not found:
        return None
    for p in found:
        if p.name == "viky.cti":
            return p
    return found[0]


def _import_harvester():
    try:
        from harvesters.core import Harvester
    except ImportError as exc:
        raise SourceError(
            "GenICam cameras need the optional `camera` extra (harvesters + genicam): "
            "pip install 'linewatch[camera]'"
        ) from exc
    return Harvester


# --- one Harvester per producer -----------------------------------------------------------------
class _Producer:
    """A loaded GenTL producer shared by every camera on it."""

    def __init__(self, cti: str) -> None:
        self.cti = cti
        self.lock = threading.Lock()
        self.harvester: Any = None
        self.open = 0  # open image acquirers

    def load(self) -> Any:
        if self.harvester is None:
            Harvester = _import_harvester()
            h = Harvester()
            h.add_file(self.cti)
            h.update()
            self.harvester = h
        elif self.open == 0:
            self.harvester.update()  # re-enumerate (a replugged camera); only safe with none open
        return self.harvester

    def unload_if_idle(self) -> None:
        if self.open == 0 and self.harvester is not None:
            try:
                self.harvester.reset()
            finally:
                self.harvester = None


_PRODUCERS: dict[str, _Producer] = {}
_PRODUCERS_LOCK = threading.Lock()


def _producer(cti: str) -> _Producer:
    with _PRODUCERS_LOCK:
        p = _PRODUCERS.get(cti)
        if p is None:
            p = _PRODUCERS[cti] = _Producer(cti)
        return p


def _info(d: Any, key: str) -> Any:
    """A device-info field, None where the producer does not provide it (GenTL raises then)."""
    try:
        return getattr(d, key)
    except Exception:  # noqa: BLE001 - genicam.gentl.NotAvailableException and friends
        return None


def describe_devices(device_info_list: list[Any]) -> str:
    rows = []
    for i, d in enumerate(device_info_list):
        rows.append(
            f"[{i}] serial={_info(d, 'serial_number')!r} id={_info(d, 'id_')!r} "
            f"name={_info(d, 'user_defined_name')!r} model={_info(d, 'model')!r}"
        )
    return "; ".join(rows) if rows else "none"


def select_device(device_info_list: list[Any], device: str | int | None) -> int:
    """Index of the device matching `device` (index, or serial / id / user-defined name)."""
    n = len(device_info_list)
    if device is None:
        if n == 1:
            return 0
        if n == 0:
            raise SourceDown("the GenTL producer reports no device")
        raise SourceError(
            f"{n} cameras found, set `device` to an index, serial number or id: {describe_devices(device_info_list)}"
        )
    if isinstance(device, int):
        if 0 <= device < n:
            return device
        raise SourceDown(f"device index {device} not present ({n} found: {describe_devices(device_info_list)})")
    for i, d in enumerate(device_info_list):
        if device in (_info(d, "serial_number"), _info(d, "id_"), _info(d, "user_defined_name")):
            return i
    raise SourceDown(f"device {device!r} not found (serial / id / name); found: {describe_devices(device_info_list)}")


# --- features -----------------------------------------------------------------------------------
def _allowed(node: Any) -> str:
    try:
        return "allowed: " + ", ".join(map(str, node.symbolics))
    except Exception:  # noqa: BLE001 - not an enumeration
        pass
    try:
        return f"allowed: {node.min} .. {node.max}"
    except Exception:  # noqa: BLE001
        return ""


def _coerce(node: Any, value: Any) -> Any:
    """The value in the node's type (TOML gives 640.0 for an integer node, 100 for a float one ...)."""
    kind = type(node).__name__
    if kind == "IInteger":
        if isinstance(value, bool) or not float(value).is_integer():
            raise ValueError(f"an integer is needed, got {value!r}")
        return int(value)
    if kind == "IFloat":
        if isinstance(value, bool):
            raise ValueError(f"a number is needed, got {value!r}")
        return float(value)
    if kind == "IBoolean":
        if not isinstance(value, bool):
            raise ValueError(f"true or false is needed, got {value!r}")
        return value
    if kind in ("IEnumeration", "IString"):
        return str(value)
    return value


def apply_features(node_map: Any, features: dict[str, Any]) -> list[str]:
    """Set `features` on a GenICam node map in FEATURE_ORDER; returns the problems, one per feature.

    Values are coerced to the node's type (integer, float, boolean, enumeration entry / string);
    a command node runs when its value is true.
    """
    from genicam.genapi import EAccessMode

    writable = (EAccessMode.RW, EAccessMode.WO)
    names = [n for n in FEATURE_ORDER if n in features] + [n for n in features if n not in FEATURE_ORDER]
    todo: list[tuple[str, Any, bool]] = [(n, features[n], True) for n in names]
    if "AcquisitionFrameRate" in features and "AcquisitionFrameRateEnable" not in features:
        i = names.index("AcquisitionFrameRate")
        todo.insert(i, ("AcquisitionFrameRateEnable", True, False))  # only where the device has it
    problems: list[str] = []
    for name, value, asked in todo:
        if not node_map.has_node(name):
            if asked:
                problems.append(f"{name}: unknown feature (the device has no such node)")
            continue
        node = node_map.get_node(name)
        try:
            mode = node.get_access_mode()
        except Exception:  # noqa: BLE001
            mode = None
        if mode not in writable:
            if asked:
                kind = {EAccessMode.RO: "read-only", EAccessMode.NA: "not available now", EAccessMode.NI: "not implemented"}
                problems.append(f"{name}: {kind.get(mode, f'not writable (access mode {mode})')}")
            continue
        try:
            if type(node).__name__ == "ICommand":
                if value is True:
                    node.execute()
                continue
            node.value = _coerce(node, value)
        except Exception as exc:  # noqa: BLE001 - genapi raises its own exception types
            msg = str(exc).split(" : ")[0]
            problems.append(f"{name}={value!r} refused: {msg} ({_allowed(node)})")
    return problems


class GenicamSource(BaseSource):
    """A GenICam camera through harvesters (module doc)."""

    kind = "genicam"

    def __init__(self, config: GenicamCamera, *, cti: str | Path | None = None, reconnect_min_s: float = 0.5,
                 reconnect_max_s: float = 30.0) -> None:
        """`cti`: where `config.cti` is (the profile resolves it); None = as written. A lost device is
        reopened after `reconnect_min_s`, doubled on each failure up to `reconnect_max_s`."""
        super().__init__(config.id, roi=config.roi, fps=0.0,
                         reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.config = config
        self.cti = str(Path(config.cti if cti is None else cti).expanduser())
        self.device_info: dict[str, Any] = {}
        """serial_number, id_, model, vendor of the open device (for status / logs)."""
        self.feature_problems: list[str] = []
        self._ia: Any = None
        self._prod: _Producer | None = None
        self._opened_once = False
        self._last_frame_mono = 0.0
        self._last_dev_id: int | None = None
        self._ts_offset: int | None = None

    # --- life cycle ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        _import_harvester()
        if not Path(self.cti).is_file():
            raise SourceError(f"GenTL producer {self.cti} does not exist (set the camera's `cti` to the vendor's .cti file)")
        try:
            self._open()
        except SourceDown as exc:  # the device may come up later: the thread retries with backoff
            self._log.warning("camera not available at start, retrying", reason=str(exc))

    def _open(self) -> None:
        if self._ia is not None:
            return
        cfg = self.config
        prod = self._prod or _producer(self.cti)
        self._prod = prod
        with prod.lock:
            try:
                h = prod.load()
            except SourceError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise SourceDown(f"cannot load GenTL producer {self.cti}: {exc}") from exc
            index = select_device(list(h.device_info_list), cfg.device)
            info = h.device_info_list[index]
            try:
                ia = h.create(index)
            except Exception as exc:  # noqa: BLE001
                raise SourceDown(f"cannot open camera {describe_devices([info])}: {exc}") from exc
            prod.open += 1
        self._ia = ia
        self.device_info = {k: _info(info, k) for k in ("serial_number", "id_", "model", "vendor")}
        try:
            problems = apply_features(ia.remote_device.node_map, cfg.features)
            if problems:
                self.feature_problems = problems
                if cfg.strict and not self._opened_once:
                    raise SourceError(
                        f"camera {self.camera!r} ({self.device_info.get('id_')}): GenICam feature problem(s): "
                        + "; ".join(problems)
                        + " (strict = false runs the camera anyway, with warnings)"
                    )
                for p in problems:
                    self._log.warning("GenICam feature not applied", problem=p)
            try:
                ia.num_buffers = cfg.buffers
            except Exception as exc:  # noqa: BLE001
                self._log.warning("cannot set the number of GenTL buffers", buffers=cfg.buffers, error=str(exc))
            ia.start()
        except SourceError:
            self._close()
            raise
        except Exception as exc:  # noqa: BLE001
            self._close()
            raise SourceDown(f"cannot start acquisition: {exc}") from exc
        self._opened_once = True
        self._last_frame_mono = time.monotonic()
        self._last_dev_id = None
        self._ts_offset = None
        self._log.info("camera open", **self.device_info, features=cfg.features)

    def _close(self) -> None:
        ia, self._ia = self._ia, None
        if ia is None:
            return
        for step in (ia.stop, ia.destroy):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - closing a lost device may fail; go on
                self._log.debug("camera close step failed", step=step.__name__, error=str(exc))
        prod = self._prod
        if prod is not None:
            with prod.lock:
                prod.open -= 1
                prod.unload_if_idle()

    # --- frames -------------------------------------------------------------------------------
    def _fetch(self) -> Any:
        """One buffer or None on timeout (a seam for tests)."""
        return self._ia.try_fetch(timeout=self.config.timeout_s)

    def _grab(self) -> Grab:
        cfg = self.config
        if self._ia is None:
            raise SourceDown("camera not open")
        try:
            buf = self._fetch()
        except Exception as exc:  # noqa: BLE001 - any fetch failure means the device is gone
            raise SourceDown(f"fetch failed: {type(exc).__name__}: {exc}") from exc
        now_mono = time.monotonic()
        if buf is None:
            if cfg.down_after_s and now_mono - self._last_frame_mono > cfg.down_after_s:
                raise SourceDown(f"no frame for {now_mono - self._last_frame_mono:.1f} s")
            raise NoFrame
        t_ns = time.time_ns()
        self._last_frame_mono = now_mono
        try:
            comp = buf.payload.components[0]
            fmt = str(comp.data_format)
            image = as_image(comp.data, int(comp.width), int(comp.height), fmt)
            lost = self._lost_before(buf)
            if cfg.timestamps == "device":
                t_ns = self._device_time(buf, t_ns)
        except CorruptFrame as exc:
            buf.queue()
            raise CorruptFrame(str(exc), t_capture_ns=t_ns) from exc
        except Exception as exc:  # noqa: BLE001
            buf.queue()
            raise CorruptFrame(f"unreadable buffer: {type(exc).__name__}: {exc}", t_capture_ns=t_ns) from exc
        return Grab(image, fmt, t_ns, lost_before=lost, release=buf.queue)

    def _lost_before(self, buf: Any) -> int:
        if not self.config.lost_frames:
            return 0
        try:
            fid = int(buf.frame_id)
        except Exception:  # noqa: BLE001 - the device does not number its frames
            return 0
        last, self._last_dev_id = self._last_dev_id, fid
        if last is None or fid <= last:
            return 0
        gap = fid - last - 1
        if gap > _MAX_GAP:
            self._log.warning("camera frame id jumped, not counted as lost frames", last=last, now=fid)
            return 0
        return gap

    def _device_time(self, buf: Any, host_ns: int) -> int:
        try:
            dev = int(buf.timestamp_ns)
        except Exception:  # noqa: BLE001 - no timestamps on this device
            return host_ns
        if dev <= 0:
            return host_ns
        off = host_ns - dev
        if self._ts_offset is None or off < self._ts_offset:
            self._ts_offset = off
        return dev + self._ts_offset
