"""`linewatch build-engine`: build the TensorRT plan of an ONNX model for this GPU.

    linewatch build-engine --onnx engines/<model>.onnx [--fp16] [--max-batch 8] [--workspace 2048]

The plan, its JSON sidecar and the timing cache (reused by later builds) are written beside the
ONNX; the plan's name carries the ONNX sha256, the GPU name, the TensorRT version, the max batch
and the precision, and `open_engine(..., backend="tensorrt")` finds it by that key.
Needs `pip install 'linewatch[gpu]'` (tensorrt, pycuda) and an NVIDIA GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from linewatch.cli.args import add_command, add_max_batch, check_min
from linewatch.errors import EngineError


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "build-engine", run,
                    help="build the TensorRT plan of an ONNX model for this GPU (needs linewatch[gpu])",
                    description=__doc__, raw=True)
    p.add_argument("--onnx", type=Path, required=True, help="the ONNX model (its manifest JSON beside it)")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (recommended; default FP32)")
    add_max_batch(p, default=8, help="largest batch the plan accepts (default: 8)")
    p.add_argument("--opt-batch", type=int, default=None, help="batch size to tune for (default: largest power of two <= max)")
    p.add_argument("--workspace", type=int, default=2048, metavar="MiB", help="builder workspace in MiB (default: 2048)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default: 0)")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose build log")


def run(args: argparse.Namespace) -> int:
    from linewatch.engines.factory import GPU_EXTRA, missing_modules
    from linewatch.engines.manifest import load_manifest

    check_min("--max-batch", args.max_batch, 1)
    check_min("--workspace", args.workspace, 64, " MiB")
    manifest, onnx_path = load_manifest(args.onnx, verify=True)
    missing = missing_modules("tensorrt", "pycuda")
    if missing:
        raise EngineError(f"build-engine needs {' and '.join(missing)}: {GPU_EXTRA}")
    from linewatch.engines.build import build_plan

    plan, info = build_plan(
        onnx_path,
        onnx_sha256=manifest.sha256,
        input_hw=manifest.input_hw,
        fp16=args.fp16,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        workspace_mib=args.workspace,
        device=args.device,
        verbose=args.verbose,
    )
    print(
        f"built {plan} ({plan.stat().st_size / 1e6:.1f} MB) in {info.build_seconds:.1f} s: {info.gpu}, "
        f"TensorRT {info.tensorrt}, {info.precision}, batch 1..{info.max_batch} (tuned for {info.opt_batch})"
    )
    return 0
