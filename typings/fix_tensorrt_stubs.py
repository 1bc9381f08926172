"""Copy the `tensorrt-stubs` wheel's .pyi files into typings/ with the minimal fixes mypy needs.

    pip install --no-deps tensorrt-stubs==10.13.0.35.1
    python typings/fix_tensorrt_stubs.py        # rewrites typings/tensorrt*/ from the installed stubs

The generated stubs (pybind11-stubgen) do not parse or mislead mypy in four places:

1. parameters named `in` (a keyword): renamed `in_` (IPluginV2DynamicExt/IPluginV3 plugin hooks);
2. `INetworkDefinition.add_scale_nd`: a parameter without default after defaulted ones: given `= ...`;
3. `import tensorrt_libs` (a runtime-only package without stubs): removed;
4. the module attribute `bool: DataType` in `tensorrt_bindings/tensorrt.pyi` shadows the builtin
   `bool` in every annotation of that file (339 "not valid as a type" errors, and every `-> bool`
   would read as Any): removed there (use `trt.DataType.BOOL`).

The remaining stubgen artefacts (`capsule`, `...` as a type, odd `self` types) are inside the stubs
only; the mypy configuration sets `ignore_errors` for `tensorrt.*` and `tensorrt_bindings.*`.
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ("tensorrt", "tensorrt_bindings")


def fix(text: str) -> str:
    text = re.sub(r"(\(self(?:: \w+)?, )in: ", r"\1in_: ", text)
    text = text.replace(
        "shift: Weights = None, scale: Weights = None, power: Weights = None, channel_axis: int)",
        "shift: Weights | None = None, scale: Weights | None = None, power: Weights | None = None, "
        "channel_axis: int = ...)",
    )
    text = re.sub(r"^import tensorrt_libs as tensorrt_libs\r?\n", "", text, flags=re.M)
    text = re.sub(r"^bool: DataType  #[^\n]*\n", "", text, flags=re.M)
    return text


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    for pkg in PACKAGES:
        src = site / pkg
        if not (src / "__init__.pyi").is_file():
            print(f"{src}: no stubs; pip install --no-deps tensorrt-stubs", file=sys.stderr)
            return 2
        dst = HERE / pkg
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir()
        for f in sorted(src.glob("*.pyi")):
            raw = f.read_bytes().decode()
            (dst / f.name).write_bytes(fix(raw).encode())
            print(f"{f} -> {dst / f.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
