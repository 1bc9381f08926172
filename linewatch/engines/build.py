"""TensorRT plans: naming, compatibility, and the builder behind `linewatch build-engine` (SPEC §5).

A plan is only valid for the ONNX it was built from, the GPU model it was built on and the
TensorRT version that built it. Plans live beside the ONNX (normally `engines/`) under a key:

    <onnx stem>.<sha256[:16]>.<gpu slug>.trt<version>.b<max batch>.<precision>.plan
    <same>.plan.json                      the sidecar: what the plan was built from and for
    timing.<gpu slug>.trt<version>.cache  TensorRT's timing cache, kept and reused by every build

Everything above the `build_plan` function is pure Python (no TensorRT needed): the runtime
(`linewatch.engines.trt`) and the tests use it to find a plan and to refuse a stale one.
The builder uses the TensorRT 10 API only (explicit batch is the default network mode).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from linewatch import atomicfile, jsonfile
from linewatch.engines.base import INPUT_NAME
from linewatch.errors import EngineError

PLAN_FORMAT = "linewatch-plan/1"
PRECISIONS = ("fp16", "fp32")


@dataclass
class PlanInfo:
    """The JSON sidecar of a plan."""

    onnx: str
    """File name of the ONNX the plan was built from."""
    onnx_sha256: str
    gpu: str
    """GPU name as the CUDA driver reports it, e.g. "NVIDIA H100 80GB HBM3"."""
    tensorrt: str
    """TensorRT version that built the plan, e.g. "10.13.0.35"."""
    max_batch: int
    opt_batch: int
    precision: str
    input_height: int
    input_width: int
    workspace_mib: int
    build_seconds: float = 0.0
    built_at: str = ""
    format: str = PLAN_FORMAT

    def save(self, path: Path) -> None:
        atomicfile.write_text(path, jsonfile.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> PlanInfo:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EngineError(f"{path}: unreadable plan sidecar: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != PLAN_FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise EngineError(f"{path}: format {got!r}, expected {PLAN_FORMAT!r}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise EngineError(f"{path}: {exc}") from exc


def slug(text: str) -> str:
    """"NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def plan_key(onnx_stem: str, onnx_sha256: str, gpu: str, trt_version: str, max_batch: int, precision: str) -> str:
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return f"{onnx_stem}.{onnx_sha256[:16]}.{slug(gpu)}.trt{trt_version}.b{max_batch}.{precision}"


def plan_path(engines_dir: Path, key: str) -> Path:
    return engines_dir / f"{key}.plan"


def sidecar_path(plan: Path) -> Path:
    return plan.with_name(plan.name + ".json")


def timing_cache_path(engines_dir: Path, gpu: str, trt_version: str) -> Path:
    return engines_dir / f"timing.{slug(gpu)}.trt{trt_version}.cache"


def build_command(onnx_path: Path, max_batch: int, precision: str) -> str:
    fp16 = " --fp16" if precision == "fp16" else ""
    return f"linewatch build-engine --onnx {onnx_path}{fp16} --max-batch {max_batch}"


def check_plan(
    info: PlanInfo, plan: Path, onnx_path: Path, onnx_sha256: str, gpu: str, trt_version: str, max_batch: int
) -> None:
    """Refuse a plan built from another ONNX, on another GPU model, by another TensorRT, or too small."""
    rebuild = f"rebuild it here: `{build_command(onnx_path, max(max_batch, info.max_batch), info.precision)}`"
    if info.onnx_sha256 != onnx_sha256:
        raise EngineError(
            f"{plan}: built from an ONNX with sha256 {info.onnx_sha256[:12]}…, but {onnx_path} has "
            f"{onnx_sha256[:12]}…; {rebuild}"
        )
    if info.gpu != gpu:
        raise EngineError(f"{plan}: built for GPU {info.gpu!r}, this is {gpu!r}; {rebuild}")
    if info.tensorrt != trt_version:
        raise EngineError(
            f"{plan}: built by TensorRT {info.tensorrt}, this is TensorRT {trt_version}; {rebuild}"
        )
    if info.max_batch < max_batch:
        raise EngineError(f"{plan}: built for batches up to {info.max_batch}, {max_batch} asked; {rebuild}")


def find_plan(
    onnx_path: Path,
    onnx_sha256: str,
    gpu: str,
    trt_version: str,
    max_batch: int,
    precision: str,
    engines_dir: Path | None = None,
) -> tuple[Path, PlanInfo]:
    """The plan for this ONNX, GPU, TensorRT and precision with the smallest max batch >= `max_batch`.

    Raises EngineError that says how to build one when none fits, and refuses (with the rebuild
    command) when the only plans for this ONNX were built on another GPU or TensorRT version.
    """
    folder = engines_dir if engines_dir is not None else onnx_path.parent
    exact = plan_path(folder, plan_key(onnx_path.stem, onnx_sha256, gpu, trt_version, max_batch, precision))
    if exact.is_file():
        side = sidecar_path(exact)
        if not side.is_file():
            raise EngineError(f"{exact}: its sidecar {side.name} is missing; rebuild: `{build_command(onnx_path, max_batch, precision)}`")
        info = PlanInfo.load(side)
        check_plan(info, exact, onnx_path, onnx_sha256, gpu, trt_version, max_batch)
        return exact, info
    fits: list[tuple[int, Path, PlanInfo]] = []
    stale: list[str] = []
    for side in sorted(folder.glob(f"{onnx_path.stem}.*.plan.json")):
        info = PlanInfo.load(side)
        plan = side.with_name(side.name[: -len(".json")])
        if info.onnx_sha256 != onnx_sha256 or info.precision != precision or not plan.is_file():
            continue
        if info.gpu != gpu or info.tensorrt != trt_version:
            stale.append(f"{plan.name} (GPU {info.gpu!r}, TensorRT {info.tensorrt})")
        elif info.max_batch >= max_batch:
            fits.append((info.max_batch, plan, info))
    if fits:
        _, plan, info = min(fits, key=lambda f: f[0])
        return plan, info
    cmd = build_command(onnx_path, max_batch, precision)
    if stale:
        raise EngineError(
            f"{folder}: the {precision} plans for {onnx_path.name} were built elsewhere: {'; '.join(stale)}; "
            f"this is GPU {gpu!r} with TensorRT {trt_version}: rebuild with `{cmd}`"
        )
    raise EngineError(
        f"{folder}: no {precision} TensorRT plan for {onnx_path.name} (sha256 {onnx_sha256[:12]}…) on "
        f"{gpu!r} with TensorRT {trt_version} for batches up to {max_batch}; build one with `{cmd}`"
    )


def opt_batch_for(max_batch: int) -> int:
    """The batch size TensorRT tunes its kernels for: the largest power of two <= max_batch."""
    return 1 << (max(1, max_batch).bit_length() - 1)


# ------------------------------------------------------------------------------------------------
# The builder (needs TensorRT + pycuda)
# ------------------------------------------------------------------------------------------------


def gpu_name(device: int = 0) -> str:
    """The CUDA driver's name of GPU `device` (via pycuda; no context is created)."""
    import pycuda.driver as cuda

    try:
        cuda.init()
        count = cuda.Device.count()
        if not 0 <= device < count:
            raise EngineError(f"CUDA device {device} does not exist; this machine has {count}")
        return str(cuda.Device(device).name())
    except cuda.Error as exc:
        raise EngineError(f"CUDA is not usable here ({exc}); TensorRT needs an NVIDIA GPU and driver") from exc


def build_plan(
    onnx_path: Path,
    *,
    onnx_sha256: str,
    input_hw: tuple[int, int],
    fp16: bool = True,
    max_batch: int = 8,
    opt_batch: int | None = None,
    workspace_mib: int = 2048,
    device: int = 0,
    engines_dir: Path | None = None,
    verbose: bool = False,
) -> tuple[Path, PlanInfo]:
    """Build (or rebuild) the plan for `onnx_path`; returns (plan path, sidecar).

    Parse errors of the ONNX parser are reported one per line. The timing cache of this GPU and
    TensorRT version is read before and written after the build, so later builds are fast.
    """
    import pycuda.driver as cuda
    import tensorrt as trt

    if max_batch < 1:
        raise EngineError(f"`max_batch` {max_batch}: must be >= 1")
    opt = opt_batch or opt_batch_for(max_batch)
    if not 1 <= opt <= max_batch:
        raise EngineError(f"opt batch {opt}; must be within 1..{max_batch}")
    folder = engines_dir if engines_dir is not None else onnx_path.parent
    gpu = gpu_name(device)
    version = str(trt.__version__)
    precision = "fp16" if fp16 else "fp32"
    key = plan_key(onnx_path.stem, onnx_sha256, gpu, version, max_batch, precision)
    out = plan_path(folder, key)
    cache_file = timing_cache_path(folder, gpu, version)

    ctx = cuda.Device(device).retain_primary_context()
    ctx.push()
    try:
        t0 = time.perf_counter()
        logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(f"{onnx_path}: the TensorRT ONNX parser failed:\n  " + "\n  ".join(errors))
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if names != [INPUT_NAME]:
            raise EngineError(f"{onnx_path}: inputs {names}; expected [{INPUT_NAME!r}] (not a model `linewatch export` wrote)")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        if fp16:
            if not builder.platform_has_fast_fp16:
                logger.log(trt.Logger.WARNING, f"{gpu} has no fast FP16; building FP16 anyway")
            config.set_flag(trt.BuilderFlag.FP16)
        h, w = input_hw
        profile = builder.create_optimization_profile()
        profile.set_shape(
            INPUT_NAME,
            trt.Dims([1, h, w, 3]),
            trt.Dims([opt, h, w, 3]),
            trt.Dims([max_batch, h, w, 3]),
        )
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, False)

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f"{onnx_path}: TensorRT could not build a plan (see its log above)")
        folder.mkdir(parents=True, exist_ok=True)
        atomicfile.write_bytes(out, bytes(serialized))  # a daemon loading this key's plan never sees half
        atomicfile.write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
        info = PlanInfo(
            onnx=onnx_path.name,
            onnx_sha256=onnx_sha256,
            gpu=gpu,
            tensorrt=version,
            max_batch=max_batch,
            opt_batch=opt,
            precision=precision,
            input_height=h,
            input_width=w,
            workspace_mib=workspace_mib,
            build_seconds=round(time.perf_counter() - t0, 2),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        info.save(sidecar_path(out))
    finally:
        cuda.Context.pop()
        ctx.detach()
    return out, info
