"""Strict JSON for every file and printout linewatch writes (the wire protocol has its own, `protocol.encode`).

`dumps(obj, **kw)` is `json.dumps` with NaN and ±inf written as `null` (a metric without a sample to
measure is NaN in memory, "unknown" on disk) and `allow_nan=False`, so nothing that a strict parser
refuses (`NaN`, `Infinity`) can leave: most JSON parsers besides Python's reject those. numpy scalars and
arrays become plain numbers and lists. `tests/test_jsonfile.py` checks that no other module calls
`json.dump`/`json.dumps`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def clean(v: Any) -> Any:
    """`v` with NaN/±inf as None and numpy values as Python ones, recursively (dicts, lists, tuples)."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    return v


def dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON text of `obj` (module doc); keyword arguments as `json.dumps` takes them."""
    return json.dumps(clean(obj), allow_nan=False, **kw)
