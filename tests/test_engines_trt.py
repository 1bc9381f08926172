"""TensorRT plan naming, lookup and refusal (pure Python), and mypy over the TensorRT modules.

None of this needs TensorRT or a GPU: the plan logic lives in pure functions of
`linewatch.engines.build`, and mypy checks `trt.py` / `build.py` against the fixed stubs in
`typings/` (TensorRT 10.13: `execute_async_v2`, binding indices etc. do not exist there).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from linewatch.engines.build import (
    PlanInfo,
    build_command,
    check_plan,
    find_plan,
    opt_batch_for,
    plan_key,
    plan_path,
    sidecar_path,
    slug,
    timing_cache_path,
)
from linewatch.errors import EngineError

REPO = Path(__file__).resolve().parents[1]
SHA = "ab" * 32
GPU = "NVIDIA H100 80GB HBM3"
TRT = "10.13.0.35"


def make_info(**kw: object) -> PlanInfo:
    base = PlanInfo(
        onnx="m.onnx", onnx_sha256=SHA, gpu=GPU, tensorrt=TRT, max_batch=8, opt_batch=8,
        precision="fp16", input_height=512, input_width=1224, workspace_mib=2048,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def write_plan(folder: Path, info: PlanInfo) -> Path:
    key = plan_key("m", info.onnx_sha256, info.gpu, info.tensorrt, info.max_batch, info.precision)
    plan = plan_path(folder, key)
    plan.write_bytes(b"plan")
    info.save(sidecar_path(plan))
    return plan


def test_slug_and_key() -> None:
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slug("  ") == "unknown"
    key = plan_key("resse", SHA, GPU, TRT, 8, "fp16")
    assert key == f"resse.{SHA[:16]}.nvidia-h100-80gb-hbm3.trt10.13.0.35.b8.fp16"
    assert plan_key("resse", SHA, GPU, TRT, 8, "fp32") != key
    assert plan_key("resse", SHA, "NVIDIA L4", TRT, 8, "fp16") != key
    assert plan_key("resse", SHA, GPU, "10.14.0", 8, "fp16") != key
    with pytest.raises(EngineError, match="allowed: fp16, fp32"):
        plan_key("resse", SHA, GPU, TRT, 8, "int8")
    assert timing_cache_path(Path("engines"), GPU, TRT) == Path("engines/timing.nvidia-h100-80gb-hbm3.trt10.13.0.35.cache")
    assert build_command(Path("engines/m.onnx"), 16, "fp16") == "linewatch build-engine --onnx engines/m.onnx --fp16 --max-batch 16"
    assert [opt_batch_for(n) for n in (1, 2, 3, 8, 12, 32)] == [1, 2, 2, 8, 8, 32]


def test_sidecar_round_trip_and_bad_format(tmp_path: Path) -> None:
    info = make_info(build_seconds=12.5)
    p = tmp_path / "x.plan.json"
    info.save(p)
    assert PlanInfo.load(p) == info
    p.write_text('{"format": "other/1"}')
    with pytest.raises(EngineError, match="expected 'linewatch-plan/1'"):
        PlanInfo.load(p)
    p.write_text("{not json")
    with pytest.raises(EngineError, match="unreadable plan sidecar"):
        PlanInfo.load(p)


def test_find_exact_and_smallest_sufficient(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    p8 = write_plan(tmp_path, make_info(max_batch=8))
    p32 = write_plan(tmp_path, make_info(max_batch=32))
    write_plan(tmp_path, make_info(max_batch=4, precision="fp32"))
    assert find_plan(onnx, SHA, GPU, TRT, 8, "fp16")[0] == p8  # by key
    assert find_plan(onnx, SHA, GPU, TRT, 2, "fp16")[0] == p8  # smallest max batch >= 2
    assert find_plan(onnx, SHA, GPU, TRT, 9, "fp16")[0] == p32
    with pytest.raises(EngineError, match=r"no fp16 TensorRT plan .* build one with `linewatch build-engine --onnx .*m.onnx --fp16 --max-batch 33`"):
        find_plan(onnx, SHA, GPU, TRT, 33, "fp16")
    with pytest.raises(EngineError, match="no fp32 TensorRT plan"):
        find_plan(onnx, SHA, GPU, TRT, 8, "fp32")


@pytest.mark.parametrize(
    ("built", "match"),
    [
        ({"gpu": "NVIDIA A100-SXM4-40GB"}, "built elsewhere: .*GPU 'NVIDIA A100-SXM4-40GB'"),
        ({"tensorrt": "10.3.0"}, "built elsewhere: .*TensorRT 10.3.0"),
    ],
)
def test_find_refuses_a_plan_from_another_gpu_or_tensorrt(tmp_path: Path, built: dict[str, str], match: str) -> None:
    write_plan(tmp_path, make_info(**built))
    with pytest.raises(EngineError, match=match) as err:
        find_plan(tmp_path / "m.onnx", SHA, GPU, TRT, 8, "fp16")
    assert "rebuild with `linewatch build-engine --onnx" in str(err.value)


def test_find_ignores_plans_of_another_onnx(tmp_path: Path) -> None:
    write_plan(tmp_path, make_info(onnx_sha256="cd" * 32))
    with pytest.raises(EngineError, match="no fp16 TensorRT plan"):
        find_plan(tmp_path / "m.onnx", SHA, GPU, TRT, 8, "fp16")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("gpu", "NVIDIA L4", "built for GPU 'NVIDIA L4', this is 'NVIDIA H100 80GB HBM3'; rebuild it here"),
        ("tensorrt", "10.0.1", "built by TensorRT 10.0.1, this is TensorRT 10.13.0.35; rebuild it here"),
        ("onnx_sha256", "ef" * 32, "built from an ONNX with sha256 efefef"),
        ("max_batch", 4, "built for batches up to 4, 8 asked"),
    ],
)
def test_check_plan_refusals(field: str, value: object, match: str) -> None:
    info = make_info(**{field: value})
    with pytest.raises(EngineError, match=match) as err:
        check_plan(info, Path("engines/x.plan"), Path("engines/m.onnx"), SHA, GPU, TRT, 8)
    assert "`linewatch build-engine --onnx engines/m.onnx --fp16 --max-batch 8`" in str(err.value)
    check_plan(make_info(), Path("engines/x.plan"), Path("engines/m.onnx"), SHA, GPU, TRT, 8)  # the good one passes


def test_exact_key_without_sidecar(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, make_info())
    sidecar_path(plan).unlink()
    with pytest.raises(EngineError, match="sidecar .* is missing"):
        find_plan(tmp_path / "m.onnx", SHA, GPU, TRT, 8, "fp16")


# -- mypy against the TensorRT 10.13 stubs -----------------------------------------------------


def run_mypy(tmp_path: Path, *files: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "typings" / "mypy.ini"),
           "--cache-dir", str(tmp_path / "mypy-cache"), *map(str, files)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed (linewatch[dev])")
def test_mypy_trt_modules(tmp_path: Path) -> None:
    """trt.py and build.py type-check against TensorRT 10.13; a TensorRT 8 call does not (control)."""
    control = tmp_path / "trt8_api.py"
    control.write_text(
        "import tensorrt as trt\n\n\n"
        "def run(engine: trt.ICudaEngine, ctx: trt.IExecutionContext, handle: int) -> None:\n"
        "    engine.get_binding_index('image')\n"
        "    ctx.execute_async_v2([], handle)\n"
    )
    res = run_mypy(tmp_path, "linewatch/engines/trt.py", "linewatch/engines/build.py", control)
    out = res.stdout + res.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert all(str(control) in line for line in errors), out
    assert any("get_binding_index" in line for line in errors), out
    assert any("execute_async_v2" in line for line in errors), out
