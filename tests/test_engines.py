"""Engines: parity with the PyTorch reference, zero-allocation buffers, validation, factory, CLI.

The model is the tiny ResSENet of `tinymodel.py` (exported with the real `export_onnx`, 64x96 input,
its scores spread over [0, 1] so that the decisions at 0.7 are a real test, not all-pass), with its
frames and PyTorch reference: conftest.py's fixtures `model_dir`, `onnx_path`, `frames`, `reference`.
GPU backends are marked `gpu` and skip with a reason where CUDA / TensorRT are missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (linewatch[train])")

from fake_tensorrt import fake_gpu_modules  # noqa: E402
from tinymodel import THRESHOLD, H, W, run_all  # noqa: E402

from linewatch.cli import main as cli_main  # noqa: E402
from linewatch.engines.base import Engine  # noqa: E402
from linewatch.engines.factory import cuda_device_count, list_backends, open_engine  # noqa: E402
from linewatch.engines.manifest import load_manifest  # noqa: E402
from linewatch.engines.null import NullEngine  # noqa: E402
from linewatch.errors import EngineError  # noqa: E402

FP32_TOL = 1e-3
FP16_TOL = 1e-2


def assert_parity(got: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray], tol: float) -> None:
    masks, scores = got
    ref_masks, ref_scores = ref
    assert masks.shape == ref_masks.shape and masks.dtype == np.float32
    assert scores.shape == ref_scores.shape and scores.dtype == np.float32
    np.testing.assert_allclose(scores, ref_scores, atol=tol, rtol=0)
    np.testing.assert_allclose(masks, ref_masks, atol=tol, rtol=0)
    np.testing.assert_array_equal(scores >= THRESHOLD, ref_scores >= THRESHOLD)


def test_reference_decisions_go_both_ways(reference: tuple[np.ndarray, np.ndarray]) -> None:
    above = reference[1] >= THRESHOLD
    assert above.any() and (~above).any(), "the decision-parity tests would be trivial"
    margin = np.abs(reference[1] - THRESHOLD).min()
    assert margin > 2 * FP16_TOL, f"a reference score is {margin:.4f} from the threshold: decisions would be luck"


# -- ONNX Runtime --------------------------------------------------------------------------------


def test_ort_parity(onnx_path: Path, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> None:
    engine = open_engine(onnx_path, backend="onnxruntime", max_batch=5)
    assert isinstance(engine, Engine)
    assert engine.name == "onnxruntime" and not engine.pinned and engine.input_hw == (H, W)
    assert_parity(run_all(engine, frames), reference, FP32_TOL)
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        engine.infer(frames[:1])


CPU_BACKENDS = [pytest.param("onnxruntime", {}, id="onnxruntime"),
                pytest.param("openvino", {"precision": "f32"}, id="openvino",
                             marks=pytest.mark.skipif(not list_backends()["openvino"][0], reason="no openvino"))]


@pytest.mark.parametrize(("backend", "opts"), CPU_BACKENDS)
def test_cpu_engines_write_into_the_same_buffers_every_call(onnx_path: Path, frames: np.ndarray, backend: str,
                                                             opts: dict) -> None:
    engine = open_engine(onnx_path, backend=backend, max_batch=4, threads=1, **opts)
    assert engine.device.startswith("cpu (1 thread")
    engine.warmup()
    m1, s1 = engine.infer(frames[:3])
    p1 = (m1.ctypes.data, s1.ctypes.data)
    first = s1.copy()
    m2, s2 = engine.infer(frames[3:6])
    assert (m2.ctypes.data, s2.ctypes.data) == p1
    assert np.shares_memory(m1, m2) and np.shares_memory(s1, s2)
    assert not np.array_equal(first, s2), "the bound buffers were not written by the second call"
    m4, s4 = engine.infer(frames[:4])  # another batch size: the same memory, one row longer
    assert m4.ctypes.data == p1[0] and s4.ctypes.data == p1[1]
    np.testing.assert_array_equal(s4[:3], first)


@pytest.mark.parametrize(("backend", "opts"), CPU_BACKENDS)
def test_cpu_engines_copy_a_non_contiguous_input_and_score_it_the_same(onnx_path: Path, frames: np.ndarray,
                                                                        backend: str, opts: dict) -> None:
    engine = open_engine(onnx_path, backend=backend, max_batch=4, **opts)
    flipped = frames[:3, :, ::-1]
    assert not flipped.flags.c_contiguous
    s_view = engine.infer(flipped)[1].copy()  # copy: the next call overwrites the bound buffer
    between = engine.infer(frames[3:6])[1].copy()  # something else in between
    s_ref = engine.infer(np.ascontiguousarray(flipped))[1].copy()
    assert not np.shares_memory(s_view, s_ref), "the comparison below would compare the output buffer with itself"
    assert not np.array_equal(between, s_ref), "the call in between left the same scores: a stale buffer would pass"
    np.testing.assert_array_equal(s_view, s_ref)
    unflipped = engine.infer(frames[:3])[1].copy()
    assert not np.array_equal(unflipped, s_ref), "flipping changed nothing: the comparison above proves nothing"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((1, H, W, 3), np.float32), "dtype float32"),
        (np.zeros((1, H, W), np.uint8), r"shape \[N, 64, 96, 3\]"),
        (np.zeros((1, H + 8, W, 3), np.uint8), r"got \[1, 72, 96, 3\]"),
        (np.zeros((5, H, W, 3), np.uint8), r"allowed 1..4"),
        (np.zeros((0, H, W, 3), np.uint8), r"batch of 0"),
    ],
)
def test_ort_rejects_bad_frames(onnx_path: Path, bad: np.ndarray, match: str) -> None:
    engine = open_engine(onnx_path, backend="onnxruntime", max_batch=4)
    with pytest.raises(EngineError, match=match):
        engine.infer(bad)


def test_sha256_mismatch_is_refused(model_dir: Path, tmp_path: Path) -> None:
    for name in ("tiny.onnx", "tiny.json", "tiny.pt"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    with open(tmp_path / "tiny.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EngineError, match="sha256"):
        open_engine(tmp_path / "tiny.onnx", backend="onnxruntime")


@pytest.mark.parametrize(("backend", "opts"), CPU_BACKENDS)
def test_cpu_engines_refuse_a_model_of_another_size_than_its_manifest(model_dir: Path, tmp_path: Path, backend: str,
                                                                      opts: dict) -> None:
    man, _ = load_manifest(model_dir / "tiny.onnx")
    man.input_width = W + 8
    (tmp_path / "tiny.onnx").write_bytes((model_dir / "tiny.onnx").read_bytes())
    man.save(tmp_path / "tiny.json")
    with pytest.raises(EngineError, match="input size 64x104"):
        open_engine(tmp_path / "tiny.onnx", backend=backend, **opts)


# -- null ------------------------------------------------------------------------------------------


def test_null_engine(onnx_path: Path, frames: np.ndarray) -> None:
    engine = open_engine(onnx_path, backend="null", max_batch=4)
    assert isinstance(engine, NullEngine) and isinstance(engine, Engine)
    m, s = engine.infer(frames[:3])
    assert m.shape == (3, 2, H // 8, W // 8) and s.shape == (3, 2)
    assert not m.any() and not s[:, 0].any() and (s[:, 1] == 1.0).all()  # a clean cell: passes
    m2, s2 = engine.infer(frames[:2])
    assert np.shares_memory(m, m2) and np.shares_memory(s, s2)
    with pytest.raises(EngineError, match="allowed 1..4"):
        engine.infer(frames[:5])


# -- factory ---------------------------------------------------------------------------------------


def test_factory_errors(onnx_path: Path) -> None:
    with pytest.raises(EngineError, match="allowed: auto, openvino, onnxruntime, tensorrt, torch, null"):
        open_engine(onnx_path, backend="tflite")
    with pytest.raises(EngineError, match=r"unknown options \['thread'\]; allowed: threads"):
        open_engine(onnx_path, backend="onnxruntime", thread=2)
    with pytest.raises(EngineError, match="manifest not found"):
        open_engine(onnx_path.with_name("missing.onnx"))


def test_list_backends_and_auto(onnx_path: Path) -> None:
    backends = list_backends()
    assert set(backends) == {"openvino", "onnxruntime", "tensorrt", "torch", "null"}
    assert backends["onnxruntime"][0] and backends["null"][0]
    for _name, (ok, why) in backends.items():
        assert isinstance(ok, bool) and why
    if not backends["tensorrt"][0] and not backends["torch"][0]:
        assert open_engine(onnx_path).name == ("openvino" if backends["openvino"][0] else "onnxruntime")


@pytest.mark.skipif(list_backends()["tensorrt"][0], reason="TensorRT is usable here")
def test_tensorrt_missing_names_the_extra_or_the_gpu(onnx_path: Path) -> None:
    with pytest.raises(EngineError, match=r"linewatch\[gpu\]|needs an NVIDIA GPU|no .* plan"):
        open_engine(onnx_path, backend="tensorrt")


@pytest.mark.skipif(cuda_device_count() > 0, reason="a GPU is present")
def test_torch_backend_without_cuda_says_so(onnx_path: Path) -> None:
    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        open_engine(onnx_path, backend="torch")


# -- torch -----------------------------------------------------------------------------------------


def test_torch_engine_graph_sizes() -> None:
    from linewatch.engines.torch_cuda import captured_sizes, graph_size_for

    assert captured_sizes(1) == [1]
    assert captured_sizes(8) == [1, 2, 4, 8]
    assert captured_sizes(6) == [1, 2, 4, 6]
    assert captured_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert [graph_size_for(n, [1, 2, 4, 6]) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]
    with pytest.raises(EngineError):
        graph_size_for(7, [1, 2, 4, 6])


def test_torch_engine_cpu_mode(onnx_path: Path, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> None:
    """The torch engine's buffer handling, on the CPU (FP32, eager): same numbers, same buffers."""
    from linewatch.engines.torch_cuda import TorchEngine

    man, onnx = load_manifest(onnx_path)
    engine = TorchEngine(onnx, man, max_batch=3, device="cpu")
    assert isinstance(engine, Engine) and not engine.pinned
    assert_parity(run_all(engine, frames), reference, FP32_TOL)
    m1, s1 = engine.infer(frames[:2])
    m2, s2 = engine.infer(frames[2:5])
    assert np.shares_memory(m1, m2) and np.shares_memory(s1, s2)
    engine.close()
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.infer(frames[:1])


needs_cuda = pytest.mark.skipif(cuda_device_count() == 0, reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("precision", "tol"), [("fp16", FP16_TOL), ("fp32", FP32_TOL)])
def test_torch_cuda_parity(
    onnx_path: Path, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray], precision: str, tol: float
) -> None:
    if not torch.cuda.is_available():
        pytest.skip(f"this torch ({torch.__version__}) has no CUDA")
    engine = open_engine(onnx_path, backend="torch", max_batch=6, precision=precision)
    assert engine.pinned
    engine.warmup()
    assert_parity(run_all(engine, frames), reference, tol)
    m1, s1 = engine.infer(frames[:5])  # padded to the graph of 6
    m2, s2 = engine.infer(frames[5:8])
    assert np.shares_memory(s1, s2) and np.shares_memory(m1, m2)
    engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(not list_backends()["tensorrt"][0], reason=list_backends()["tensorrt"][1])
@pytest.mark.parametrize(("fp16", "tol"), [(True, FP16_TOL), (False, FP32_TOL)])
def test_tensorrt_build_and_parity(
    model_dir: Path, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray], fp16: bool, tol: float, tmp_path: Path
) -> None:
    from linewatch.engines.build import build_plan

    for name in ("tiny.onnx", "tiny.json", "tiny.pt"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    onnx = tmp_path / "tiny.onnx"
    man, _ = load_manifest(onnx)
    plan, info = build_plan(onnx, onnx_sha256=man.sha256, input_hw=man.input_hw, fp16=fp16, max_batch=8, workspace_mib=256)
    assert plan.is_file() and info.max_batch == 8
    assert any(tmp_path.glob("timing.*.cache"))
    engine = open_engine(onnx, backend="tensorrt", max_batch=5, precision=info.precision)
    assert engine.pinned and engine.name == "tensorrt"
    engine.warmup()
    assert_parity(run_all(engine, frames), reference, tol)
    m1, s1 = engine.infer(frames[:2])
    m2, s2 = engine.infer(frames[2:7])
    assert np.shares_memory(s1, s2) and np.shares_memory(m1, m2)
    engine.close()
    with pytest.raises(EngineError, match="build-engine"):  # a larger batch than any plan: how to build one
        open_engine(onnx, backend="tensorrt", max_batch=9, precision=info.precision)


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_infer_json_and_overlays(
    onnx_path: Path, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    paths = []
    for i in range(3):
        p = tmp_path / f"cell{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))  # the model's size: no resize
        paths.append(str(p))
    big = tmp_path / "big.jpg"
    cv2.imwrite(str(big), np.full((300, 500), 90, np.uint8))  # grayscale, another size: resized
    out = tmp_path / "overlays"
    rc = cli_main(["infer", "--model", str(onnx_path), "--backend", "onnxruntime", "--max-batch", "2",
                   "--out", str(out), "--json", "--threshold", "adhesive=0.6", *paths, str(big)])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] == "onnxruntime" and doc["thresholds"] == {"anomaly": 0.7, "adhesive": 0.6}
    rows = doc["images"]
    assert [r["image"] for r in rows] == [*paths, str(big)]
    got = np.array([[r["scores"]["anomaly"], r["scores"]["adhesive"]] for r in rows[:3]])
    np.testing.assert_allclose(got, reference[1][:3], atol=FP32_TOL)
    assert rows[0]["flags"]["adhesive"] == bool(reference[1][0, 1] >= 0.6)
    for r in rows:
        img = cv2.imread(r["overlay"])
        assert img is not None and img.shape == (H, W, 3)


def test_cli_infer_table_and_errors(onnx_path: Path, frames: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    p = tmp_path / "one.png"
    cv2.imwrite(str(p), frames[0])
    assert cli_main(["infer", "--model", str(onnx_path), "--backend", "null", str(p)]) == 0
    out = capsys.readouterr().out
    assert "backend null" in out and "one.png" in out and "0.0000" in out
    assert cli_main(["infer", "--model", str(onnx_path), "--threshold", "glue=0.5", str(p)]) == 2
    assert "unknown head 'glue'" in capsys.readouterr().err
    assert cli_main(["infer", "--model", str(onnx_path), str(tmp_path / "nope.png")]) == 2
    assert "no such image" in capsys.readouterr().err


@pytest.mark.skipif(list_backends()["tensorrt"][0], reason="TensorRT is usable here")
def test_cli_build_engine_without_tensorrt(onnx_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from linewatch.engines.factory import missing_modules

    if not missing_modules("tensorrt", "pycuda"):
        pytest.skip("tensorrt and pycuda are installed (but no GPU)")
    assert cli_main(["build-engine", "--onnx", str(onnx_path), "--fp16"]) == 2
    assert "pip install 'linewatch[gpu]'" in capsys.readouterr().err


def test_physical_cores() -> None:
    import os

    from linewatch.engines.base import physical_cores

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


# -- the TensorRT runtime's control flow, on fake tensorrt/pycuda modules ---------------------------


def test_tensorrt_runtime_on_fake_modules(
    model_dir: Path, frames: np.ndarray, reference: tuple[np.ndarray, np.ndarray], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """find plan → deserialize → bind by name → HtoD → execute_async_v3 → DtoH, from another thread."""
    import importlib
    import sys
    import threading

    from linewatch.engines.build import PlanInfo, plan_key, plan_path, sidecar_path

    for name in ("tiny.onnx", "tiny.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    onnx = tmp_path / "tiny.onnx"
    man, _ = load_manifest(onnx)
    trt, pycuda, state = fake_gpu_modules(onnx, (H, W))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", pycuda.driver)  # type: ignore[attr-defined]
    monkeypatch.delitem(sys.modules, "linewatch.engines.trt", raising=False)
    trt_mod = importlib.import_module("linewatch.engines.trt")
    try:
        with pytest.raises(EngineError, match=r"no fp16 TensorRT plan .*`linewatch build-engine --onnx"):
            trt_mod.open_trt_engine(onnx, man, max_batch=4)
        info = PlanInfo(onnx="tiny.onnx", onnx_sha256=man.sha256, gpu="Fake GPU", tensorrt="10.13.0.35",
                        max_batch=8, opt_batch=8, precision="fp16", input_height=H, input_width=W, workspace_mib=64)
        plan = plan_path(tmp_path, plan_key("tiny", man.sha256, info.gpu, info.tensorrt, 8, "fp16"))
        plan.write_bytes(b"fake plan")
        info.save(sidecar_path(plan))
        engine = trt_mod.open_trt_engine(onnx, man, max_batch=4)
        assert isinstance(engine, Engine) and engine.pinned and state["depth"] == 0

        results: list[tuple[np.ndarray, np.ndarray]] = []
        pointers: set[tuple[int, int]] = set()

        errors: list[BaseException] = []

        def worker() -> None:  # the inference worker is not the thread that opened the engine
            try:
                results.append(run_all(engine, frames))
                m, s = engine.infer(frames[:3, :, ::-1])  # non-contiguous: through the page-locked buffer
                pointers.add((m.ctypes.data, s.ctypes.data))
                m, s = engine.infer(frames[:1])
                pointers.add((m.ctypes.data, s.ctypes.data))
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        if errors:
            raise errors[0]
        assert_parity(results[0], reference, FP32_TOL)
        assert len(pointers) == 1, "outputs must come from the same page-locked buffers"
        assert state["depth"] == 0 and state["executes"] == 4 + 2
        engine.close()
        engine.close()
        assert state["freed"] == 3 and state["detached"] == 1 and state["depth"] == 0
        with pytest.raises(EngineError, match="closed"):
            engine.infer(frames[:1])

        info.gpu = "Other GPU"
        info.save(sidecar_path(plan))
        with pytest.raises(EngineError, match="built for GPU 'Other GPU', this is 'Fake GPU'; rebuild"):
            trt_mod.open_trt_engine(onnx, man, max_batch=4, plan=plan)
    finally:
        sys.modules.pop("linewatch.engines.trt", None)
