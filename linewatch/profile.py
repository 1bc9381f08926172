"""Station profile: one TOML file -> one validated, typed `Profile`.

A station profile says everything the daemon needs at one inspection station: where it publishes
(`[station]`), which model runs on which backend (`[model]`), which cameras feed it and how their
frames are cropped (`[[camera]]`), how scores become decisions (`[decision]`), how many frames may
wait (`[ring]`) and what the publisher sends besides decisions (`[publish]`). The reference of every
key lives in docs/operations.md; `linewatch/profiles/demo.toml` is the embedded default.

Validation is strict: an unknown key, a wrong type or a value out of range raises `ProfileError`
whose message names the file, the key path (`decision.adhesive_rule`, `camera[1].roi`), the value
and what is allowed. Relative paths (model, cti, replay folder, CURVE keys) are resolved against the
profile's folder. A relative `model.path` is looked for in the profile's folder, then in the station's
model store (`[model] store`, default `/var/lib/linewatch/engines`), then among the models shipped
with linewatch (`shipped_dir()`: the wheel's package data, the repository's `engines/` in a checkout);
`default_model()` is the model a command uses when none is named.

`rewrite_thresholds` sets a profile text's `[decision]` thresholds as a textual edit (what
`linewatch calibrate --write` does): comments and every other line stay.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from linewatch import DEFAULT_THRESHOLD, HEADS
from linewatch.engines.factory import Backend
from linewatch.engines.openvino import Precision
from linewatch.errors import ProfileError, SettingError
from linewatch.pipeline.decide import AdhesiveRule
from linewatch.pipeline.infer import MAX_BATCH
from linewatch.protocol import DEFAULT_ENDPOINT

SOURCES = ("genicam", "synthetic", "replay")
DEFAULT_MODEL = "resse-default.onnx"
"""File name of the shipped default model in the repository's `engines/` folder."""
DEFAULT_STORE = "/var/lib/linewatch/engines"
"""Where an installed station keeps its models (systemd `StateDirectory=linewatch`)."""


def shipped_dir() -> Path:
    """The folder of the models shipped with linewatch: `linewatch/shipped/` in an installed wheel (package
    data), else the repository's `engines/` (a checkout or an editable install, which map it there)."""
    installed = Path(__file__).resolve().parent / "shipped"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "engines"


ENGINES_DIR = shipped_dir()
"""The shipped models' folder (see `shipped_dir`)."""


def default_model() -> Path:
    """The one `engines/*.onnx` of the working directory, else the shipped default model; `SettingError`
    naming the models when the working directory has several."""
    found = sorted(Path("engines").glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found:
        return ENGINES_DIR / DEFAULT_MODEL
    raise SettingError(f"no `model` given and several models in engines/: {', '.join(map(str, found))}; pick one")

FeatureValue = Union[bool, int, float, str]  # noqa: UP007 - pydantic union order matters (bool first)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CurveConfig(_Section):
    """Optional CURVE encryption of the PUB socket (zmq.auth certificate files)."""

    secret_key_file: str
    """The server's secret certificate (`zmq.auth.create_certificates` writes `<name>.key_secret`)."""
    authorized_keys_dir: str | None = None
    """Folder of the clients' public certificates allowed to subscribe; unset = any CURVE client."""


class StationConfig(_Section):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = "station"
    endpoint: Annotated[str, Field(pattern=r"^(tcp|ipc|inproc)://.+$")] = DEFAULT_ENDPOINT
    curve: CurveConfig | None = None


class ModelSection(_Section):
    """The `[model]` section: which model runs where, on which backend."""

    path: str = DEFAULT_MODEL
    """ONNX model (its manifest JSON lies beside it); a relative path is looked for in the profile's
    folder, then in `store`, then among the shipped models."""
    store: str = DEFAULT_STORE
    """The station's model folder (relative paths are relative to the profile's folder)."""
    backend: Backend = "auto"
    """auto = tensorrt or torch on a GPU, else openvino on the CPU."""
    precision: Precision = "auto"
    """openvino: auto (bf16 where the CPU has native bf16, else f32), f32, bf16, int8 (the model's INT8
    variant from `linewatch export --int8`). The GPU backends choose their own (FP16)."""
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 8
    threads: Annotated[int, Field(ge=0, le=256)] = 0
    """CPU threads of the openvino and onnxruntime backends; 0 = the physical cores."""


Roi = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4)]
CameraId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]

if TYPE_CHECKING:
    from linewatch.pipeline.acquire.base import BaseSource
    from linewatch.pipeline.acquire.genicam import GenicamSource
    from linewatch.pipeline.acquire.replay import ReplaySource
    from linewatch.pipeline.acquire.synthetic import SyntheticSource


class _CameraBase(_Section):
    """A `[[camera]]` table: the whole configuration of one camera's acquisition source.

    A camera option is one field of its model here (with its docstring) plus its row in
    docs/operations.md; the source reads it from its `config` (docs/acquisition.md, "Adding a
    camera option")."""

    id: CameraId
    roi: Roi | None = None
    """[x, y, w, h] in the source's pixels, cropped and resized to the model's input; unset = whole frame."""

    def make_source(self, profile: Profile) -> BaseSource:  # pragma: no cover - each camera model has its own
        """This camera's acquisition source, not started (`profile` resolves its relative paths).

        Imports only the source module it needs (harvesters only when a GenICam camera opens)."""
        raise NotImplementedError


class GenicamCamera(_CameraBase):
    source: Literal["genicam"] = "genicam"
    cti: str
    """GenTL producer (.cti) file."""
    device: str | Annotated[int, Field(ge=0)] | None = None
    """Serial number, id or user-defined name (string), or index (integer); unset = the only device."""
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    """GenICam features written before acquisition starts, e.g. ExposureTime = 2000.0."""
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    """One fetch waits this long for a frame."""
    down_after_s: Annotated[float, Field(ge=0)] = 5.0
    """No frame for this long = the device is lost and reopened; 0 = never (triggered lines with long pauses)."""
    strict: bool = True
    """A feature that cannot be set (unknown, read-only, refused value) stops the camera (true) or warns."""
    timestamps: Literal["host", "device"] = "host"
    """Capture time: the host clock at arrival, or the camera's timestamp mapped to the host clock."""
    buffers: Annotated[int, Field(ge=1, le=256)] = 8
    """GenTL buffers queued for the device."""
    lost_frames: bool = True
    """Report gaps in the camera's frame ids as dropped frames (fail-safe rejects)."""

    def make_source(self, profile: Profile) -> GenicamSource:
        from linewatch.pipeline.acquire.genicam import GenicamSource

        return GenicamSource(self, cti=profile.cti_path(self))


class SyntheticCamera(_CameraBase):
    source: Literal["synthetic"] = "synthetic"
    fps: Annotated[float, Field(ge=0, le=10000)] = 25.0
    """Frames per second of the simulated line; 0 = as fast as the pipeline takes them."""
    defect_rate: Annotated[float, Field(ge=0, le=1)] = 0.2
    seed: Annotated[int, Field(ge=0)] = 0
    adhesive_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """Share of cells with adhesive bars; unset = the renderer's default."""
    count: Annotated[int, Field(ge=1)] | None = None
    """Frames to produce, then the camera stops; unset = endless."""
    pool: Annotated[int, Field(ge=0, le=4096)] = 64
    """Distinct frames rendered up front and cycled (0 = render every frame live, slower)."""
    corrupt_every: Annotated[int, Field(ge=2)] | None = None
    """Every Nth frame arrives corrupt (to exercise the fail-safe path); unset = never."""

    def make_source(self, profile: Profile) -> SyntheticSource:
        from linewatch.pipeline.acquire.synthetic import SyntheticSource

        return SyntheticSource(self)


class ReplayCamera(_CameraBase):
    source: Literal["replay"] = "replay"
    path: str
    """Folder of images (sorted by name) or a video file."""
    loop: bool = False
    fps: Annotated[float, Field(ge=0, le=10000)] | None = None
    """Pace of the replay; unset or 0 = as fast as the frames decode."""
    split: str | None = None
    """For a linewatch dataset folder (labels.csv + images/): replay only this split (e.g. "test")."""

    def make_source(self, profile: Profile) -> ReplaySource:
        from linewatch.pipeline.acquire.replay import ReplaySource

        return ReplaySource(self, path=profile.resolve(self.path))


CameraConfig = Annotated[Union[GenicamCamera, SyntheticCamera, ReplayCamera], Field(discriminator="source")]  # noqa: UP007

Threshold = Annotated[float, Field(ge=0, le=1)]


class Thresholds(_Section):
    """Per head, the score at or above which a frame is rejected. A head left out decides at the model's
    recommended threshold (its manifest's `thresholds`, chosen by training on its validation part;
    `linewatch.calibrate.recommend`), else at the paper's 0.7. `linewatch calibrate --write` sets them."""

    anomaly: Threshold | None = None
    adhesive: Threshold | None = None

    def resolve(self, model: Mapping[str, float] | None = None) -> tuple[float, float]:
        """(anomaly, adhesive) in force: the profile's value, else the model's (a valid number in [0, 1]),
        else DEFAULT_THRESHOLD."""
        return (self._one("anomaly", model), self._one("adhesive", model))

    def sources(self, model: Mapping[str, float] | None = None) -> dict[str, str]:
        """Per head where its threshold comes from: "profile", "model" or "default"."""
        return {h: "profile" if getattr(self, h) is not None else "model" if _valid(model, h) else "default"
                for h in HEADS}

    def _one(self, head: str, model: Mapping[str, float] | None) -> float:
        own = getattr(self, head)
        if own is not None:
            return float(own)
        return float(model[head]) if model is not None and _valid(model, head) else DEFAULT_THRESHOLD


def _valid(model: Mapping[str, float] | None, head: str) -> bool:
    if model is None:
        return False
    v = model.get(head)
    return isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0


class DecisionConfig(_Section):
    thresholds: Thresholds = Thresholds()
    adhesive_rule: AdhesiveRule = "present"
    deadline_ms: Annotated[float, Field(gt=0, le=60000)] = 200.0
    """A frame not decided within this time after capture is rejected with reason "late"."""

    @property
    def deadline_ns(self) -> int:
        return int(round(self.deadline_ms * 1e6))


class RingConfig(_Section):
    slots: Annotated[int, Field(ge=2, le=4096)] = 32


class PublishConfig(_Section):
    overlay_pass_every: Annotated[int, Field(ge=0)] = 25
    """Publish an overlay for every Nth passing frame (rejects always get one); 0 = never for passes."""
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 80


class ArchiveConfig(_Section):
    """The station record (`linewatch.record`): the journal of every decision, the images of every reject
    and of every `pass_every`-th pass, the audit trail. Absent = no record."""

    dir: Annotated[str, Field(min_length=1)]
    """The archive folder (journal.sqlite, images/); relative to the profile's folder."""
    max_gb: Annotated[float, Field(gt=0, le=100_000)] = 20.0
    """Most gigabytes of images; over it, the oldest pass images go first, then the oldest rejects'."""
    keep_days: Annotated[float, Field(ge=0, le=36_500)] = 90.0
    """Rows and images older than this are deleted; 0 = kept until max_gb needs the room."""
    pass_every: Annotated[int, Field(ge=0)] = 100
    """Keep the image of every Nth pass (every reject's is kept); 0 = no pass images."""
    format: Literal["jpg", "png"] = "jpg"
    """The frames' file format (masks are always PNG). PNG is lossless but costs ~20x the CPU: a
    512x1224 frame took 57 ms to encode as PNG, 2.9 ms as JPEG 95 (docs/record.md)."""
    quality: Annotated[int, Field(ge=1, le=100)] = 95
    """JPEG quality (format "jpg")."""
    masks: bool = True
    """Keep both masks beside each kept frame."""


class Profile(_Section):
    station: StationConfig = StationConfig()
    model: ModelSection = ModelSection()
    camera: Annotated[list[CameraConfig], Field(min_length=1, max_length=256)]
    decision: DecisionConfig = DecisionConfig()
    ring: RingConfig = RingConfig()
    publish: PublishConfig = PublishConfig()
    archive: ArchiveConfig | None = None
    base_dir: str = Field(default=".", exclude=True)
    """Folder relative paths are resolved against (the profile's folder). Not a TOML key."""
    source_path: str | None = Field(default=None, exclude=True)
    """The file the profile was read from (None for the embedded default). Not a TOML key."""

    @model_validator(mode="after")
    def _cross_checks(self) -> Profile:
        seen: dict[str, int] = {}
        for i, cam in enumerate(self.camera):
            if cam.id in seen:
                raise _CrossError(f"camera[{i}].id", cam.id, f"camera ids must be unique (camera[{seen[cam.id]}].id has it too)")
            seen[cam.id] = i
            if cam.roi is not None and (cam.roi[2] < 1 or cam.roi[3] < 1):
                raise _CrossError(f"camera[{i}].roi", cam.roi, "width and height (3rd and 4th numbers) must be >= 1")
        if self.ring.slots < self.model.max_batch:
            raise _CrossError("ring.slots", self.ring.slots, f"must be >= model.max_batch ({self.model.max_batch})")
        return self

    # -- resolved paths -------------------------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """A path from the profile: absolute as is, else relative to the profile's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def model_candidates(self) -> list[Path]:
        """Where the model is looked for, in order: the profile's folder, the station's model store, the
        shipped models (an absolute `model.path` only where it says)."""
        p = self.resolve(self.model.path)
        if Path(self.model.path).expanduser().is_absolute():
            return [p]
        return list(dict.fromkeys([p, self.resolve(self.model.store) / self.model.path, ENGINES_DIR / self.model.path]))

    def model_path(self) -> Path:
        """The model file (first existing candidate); `ProfileError` naming the places looked in when none exists."""
        cands = self.model_candidates()
        for c in cands:
            if c.is_file():
                return c
        where = ", ".join(str(c) for c in cands)
        raise ProfileError(f"{self.source_path or '<embedded demo profile>'}: model.path = {self.model.path!r}: no such file "
                           f"(looked in {where}); export one with `linewatch export` or set model.path")

    def cti_path(self, cam: GenicamCamera) -> Path:
        """The camera's GenTL producer: as given, relative to the profile, else inside the installed
        `genicam` package (where the genicam wheel ships its simulated camera `viky.cti`)."""
        p = self.resolve(cam.cti)
        if p.is_file() or Path(cam.cti).expanduser().is_absolute():
            return p
        import importlib.util

        spec = importlib.util.find_spec("genicam")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            alt = Path(folder) / cam.cti
            if alt.is_file():
                return alt
        return p

    @property
    def camera_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.camera)


class _CrossError(ValueError):
    """A check across keys; carries the key path and value for the formatted message."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key} = {_short(value)}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


# -- loading ------------------------------------------------------------------------------------

def load_profile(path: str | Path) -> Profile:
    """Read and validate a station profile. Raises `ProfileError` naming the key, value and what is allowed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a BOM (some Windows editors write one) is no TOML
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read the station profile: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{p}: the station profile is not UTF-8 text: byte {exc.object[exc.start:exc.start + 1]!r} "
                           f"at offset {exc.start}") from exc
    return parse_profile(text, name=str(p), base_dir=p.resolve().parent)


def default_profile() -> Profile:
    """The embedded demo profile (synthetic line, default model), `linewatch/profiles/demo.toml`."""
    text = resources.files("linewatch").joinpath("profiles/demo.toml").read_text(encoding="utf-8")
    return parse_profile(text, name="<embedded demo profile>", base_dir=ENGINES_DIR, source_path=None)


def parse_profile(text: str, *, name: str = "<profile>", base_dir: str | Path = ".",
                  source_path: str | None | Literal[False] = False) -> Profile:
    """Validate profile TOML text. `name` prefixes error messages; `base_dir` anchors relative paths."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{name}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise ProfileError(f"{name}: not valid TOML: arrays or tables nested too deeply") from exc
    for reserved in ("base_dir", "source_path"):
        if reserved in raw:
            raise ProfileError(f"{name}: unknown key {reserved!r} in the top level; allowed: {', '.join(_allowed(Profile))}")
    data = dict(raw)
    data["base_dir"] = str(base_dir)
    data["source_path"] = name if source_path is False else source_path
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_format_errors(name, exc, raw)) from None


# -- thresholds rewrite -------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_INLINE = re.compile(r"^(\s*thresholds\s*=\s*)\{[^}]*\}(.*)$")


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def rewrite_thresholds(text: str, thresholds: dict[str, float]) -> str:
    """The profile text with `[decision]` thresholds set to `thresholds` (some or all heads of HEADS;
    a head the profile sets and `thresholds` leaves out keeps its value, a head neither sets stays out:
    it decides at the model's recommended threshold).

    Handles a `[decision.thresholds]` table, `thresholds = { ... }` or `thresholds.<head> = ...` in
    `[decision]`, and profiles without either (the keys are added); comments and every other line stay.
    The result is checked by parsing it back; `ProfileError` when the edit could not be made safely.
    """
    try:
        explicit = tomllib.loads(text).get("decision", {}).get("thresholds", {})
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"the profile is not valid TOML ({exc}); set the thresholds by hand") from exc
    if not isinstance(explicit, dict):
        explicit = {}
    try:
        thresholds = {h: float(v) for h, v in {**explicit, **thresholds}.items() if h in HEADS and v is not None}
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"[decision] thresholds {explicit!r} are not numbers ({exc}); set them by hand") from exc
    heads = [h for h in HEADS if h in thresholds]
    lines = text.splitlines(keepends=True)
    section: str | None = None
    idx_decision = idx_table = None
    done: set[str] = set()
    out: list[str] = []
    inline_done = False
    for line in lines:
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("#"):
            section = m.group(1)
            out.append(line)
            if section == "decision":
                idx_decision = len(out)
            elif section == "decision.thresholds":
                idx_table = len(out)
            continue
        if section == "decision":
            mi = _INLINE.match(line)
            if mi:
                inner = ", ".join(f"{h} = {_fmt(thresholds[h])}" for h in heads)
                out.append(f"{mi.group(1)}{{ {inner} }}{mi.group(2)}\n")
                inline_done = True
                done.update(heads)
                continue
            for h in heads:
                md = re.match(rf"^(\s*thresholds\.{h}\s*=\s*)[^#\n]*?(\s*#.*)?$", line.rstrip("\n"))
                if md:
                    line = f"{md.group(1)}{_fmt(thresholds[h])}{md.group(2) or ''}\n"
                    done.add(h)
        elif section == "decision.thresholds":
            for h in heads:
                md = re.match(rf"^(\s*{h}\s*=\s*)[^#\n]*?(\s*#.*)?$", line.rstrip("\n"))
                if md:
                    line = f"{md.group(1)}{_fmt(thresholds[h])}{md.group(2) or ''}\n"
                    done.add(h)
        out.append(line)
    missing = [h for h in heads if h not in done]
    if missing:
        if idx_table is not None:
            out[idx_table:idx_table] = [f"{h} = {_fmt(thresholds[h])}\n" for h in missing]
        elif idx_decision is not None and not inline_done and len(missing) == len(heads):
            inner = ", ".join(f"{h} = {_fmt(thresholds[h])}" for h in heads)
            out[idx_decision:idx_decision] = [f"thresholds = {{ {inner} }}\n"]
        elif idx_decision is not None:
            out[idx_decision:idx_decision] = [f"thresholds.{h} = {_fmt(thresholds[h])}\n" for h in missing]
        else:
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            inner = ", ".join(f"{h} = {_fmt(thresholds[h])}" for h in heads)
            out.append(f"\n[decision]\nthresholds = {{ {inner} }}\n")
    new = "".join(out)
    try:
        got = tomllib.loads(new).get("decision", {}).get("thresholds", {})
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"could not rewrite the thresholds safely ({exc}); set them by hand") from exc
    if any(abs(float(got.get(h, -1)) - round(thresholds[h], 4)) > 1e-9 for h in heads):
        raise ProfileError(f"could not rewrite the thresholds safely (read back {got}); set them by hand")
    return new


# -- error formatting ---------------------------------------------------------------------------

_SHORT = 80


def _short(value: Any) -> str:
    """`repr(value)` cut to a readable length: a message names a value, it does not echo a megabyte string."""
    text = repr(value)
    return text if len(text) <= _SHORT else f"{text[:_SHORT]}... ({len(text)} characters)"


def _allowed(model: type[BaseModel]) -> list[str]:
    return [k for k, f in model.model_fields.items() if not f.exclude]


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = str(part)
            if len(key) > 40 or not key.isprintable():  # a key of the file's own (features, an unknown one)
                key = _short(key) if len(repr(key)) <= _SHORT else f"{repr(key)[:40]}..."
            out += ("." if out else "") + key
    return out or "(top level)"


def _strip_tags(loc: tuple[Any, ...], raw: Any, missing: bool = False) -> tuple[Any, ...]:
    """The key path of an error location: pydantic's union-member tags ('synthetic' after `camera[i]`, 'str',
    'list[...]', ...) dropped. A part is a key when the file has it there (walking `raw`, the parsed TOML), so
    a key of any name ('[', 'str', 'nullable') stays; the last part stays too when it is the missing key."""
    out: list[Any] = []
    node: Any = raw
    for i, part in enumerate(loc):
        if (i >= 2 and loc[i - 2] == "camera" and isinstance(loc[i - 1], int) and isinstance(node, dict)
                and part == node.get("source") and part in SOURCES):
            continue  # the camera union's tag (even if the table also has a key of that name)
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and type(part) is int and 0 <= part < len(node):
            node = node[part]
        elif not (missing and i == len(loc) - 1):
            continue  # a union member's tag: not a key of the file
        out.append(part)
    return tuple(out)


def _section_model(loc: tuple[Any, ...], raw: dict[str, Any]) -> type[BaseModel] | None:
    """The model class that holds the key at `loc` (for listing the allowed keys)."""
    model: Any = Profile
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            if isinstance(node, list) and part < len(node):
                node = node[part]
            else:
                node = None
            if model is _CAMERA_LIST:
                src = node.get("source") if isinstance(node, dict) else None
                model = _CAMERA_BY_SOURCE.get(src, _CameraBase)
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return model
        node = node.get(part) if isinstance(node, dict) else None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


_CAMERA_LIST = object()
_CAMERA_BY_SOURCE: dict[Any, type[BaseModel]] = {m.model_fields["source"].default: m for m in get_args(get_args(CameraConfig)[0])}
"""The camera model of each source kind (SOURCES), from the `CameraConfig` union."""


def _unwrap(ann: Any) -> Any:
    origin = get_origin(ann)
    if origin is list:
        return _CAMERA_LIST
    if origin is Annotated:
        return _unwrap(get_args(ann)[0])
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        members = [a for a in get_args(ann) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return ann


def _section_label(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "the top level"
    if loc[0] == "camera" and len(loc) >= 2:
        return f"[[camera]] #{loc[1]} ({_key_path(loc)})"
    return f"[{_key_path(loc)}]"


def _constraint_text(err: Mapping[str, Any]) -> str:
    t, ctx = err["type"], err.get("ctx") or {}
    if t == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"one of {expected}"
    if t == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"one of {expected}"
    if t == "union_tag_not_found":
        return f"missing key 'source' (one of {', '.join(SOURCES)})"
    bounds = {"greater_than_equal": ">= {ge}", "less_than_equal": "<= {le}", "greater_than": "> {gt}", "less_than": "< {lt}"}
    if t in bounds:
        return "a number " + bounds[t].format(**ctx)
    types = {"int_type": "an integer", "float_type": "a number", "string_type": "a string", "bool_type": "true or false",
             "list_type": "an array", "tuple_type": "an array", "dict_type": "a table", "model_type": "a table",
             "model_attributes_type": "a table", "int_from_float": "an integer", "bool_parsing": "true or false"}
    if t in types:
        return types[t]
    if err["loc"] and err["loc"][-1] == "roi" and t in ("too_short", "too_long", "list_type"):
        return "an array of 4 integers [x, y, w, h]"
    if t == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if t == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    if t == "string_too_short":
        return "a non-empty string"
    if t == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if pattern.startswith("^(tcp"):
            return "a ZeroMQ endpoint such as tcp://127.0.0.1:5555, ipc:///run/linewatch.sock"
        return "letters, digits, '_', '.', '-' only"
    return err.get("msg", t)


def _either(options: list[str]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def _format_errors(name: str, exc: ValidationError, raw: dict[str, Any]) -> str:
    lines: list[str] = []
    allowed_at: dict[str, list[str]] = {}
    """`path = value` -> what each member of a union allows: one line, e.g. "must be a string or an integer"."""
    for err in exc.errors(include_url=False):
        t = err["type"]
        if t == "value_error" and isinstance((err.get("ctx") or {}).get("error"), _CrossError):
            ce = err["ctx"]["error"]
            lines.append(f"{ce.key} = {_short(ce.value)}: {ce.allowed}")
            continue
        loc = _strip_tags(tuple(err["loc"]), raw, missing=t == "missing")
        if t == "extra_forbidden":
            key, parent = loc[-1], loc[:-1]
            model = _section_model(parent, raw)
            allowed = ", ".join(_allowed(model)) if model else "(none)"
            lines.append(f"unknown key {_short(key)} in {_section_label(parent)}; allowed: {allowed}")
            continue
        path = _key_path(loc)
        if t == "missing":
            lines.append(f"{path}: missing (required)")
            continue
        if t in ("union_tag_invalid", "union_tag_not_found"):
            path = _key_path(loc + ("source",)) if t == "union_tag_invalid" else path
            val = (err.get("ctx") or {}).get("tag", err.get("input"))
            if t == "union_tag_not_found":
                lines.append(f"{path}: {_constraint_text(err)}")
            else:
                lines.append(f"{path} = {_short(val)}: must be {_constraint_text(err)}")
            continue
        what = f"{path} = {_short(err.get('input'))}"
        if what not in allowed_at:
            allowed_at[what] = []
            lines.append(what)
        if _constraint_text(err) not in allowed_at[what]:
            allowed_at[what].append(_constraint_text(err))
    lines = [f"{line}: must be {_either(allowed_at[line])}" if line in allowed_at else line for line in lines]
    if len(lines) == 1:
        return f"{name}: {lines[0]}"
    return f"{name}: {len(lines)} problems:\n" + "\n".join(f"  - {line}" for line in lines)
