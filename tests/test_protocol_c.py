"""The protocol read by a C subscriber against libzmq (tests/independent_subscriber.c).

Skipped when there is no C compiler or no zmq.h (Debian: `apt-get install libzmq3-dev`). The C side
shares nothing with linewatch; its output is validated here against the schema files loaded by path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from linewatch.pipeline.decide import Decision
from linewatch.pipeline.publish import Publisher

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = HERE.parent / "linewatch" / "schemas"


@pytest.fixture(scope="module")
def c_subscriber(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc)")
    exe = tmp_path_factory.mktemp("csub") / "independent_subscriber"
    proc = subprocess.run([cc, "-O1", "-o", str(exe), str(HERE / "independent_subscriber.c"), "-lzmq"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        if "zmq.h" in proc.stderr or "-lzmq" in proc.stderr or "cannot find" in proc.stderr:
            pytest.skip("libzmq development files missing (Debian: libzmq3-dev)")
        raise AssertionError(proc.stderr)
    return exe


def test_c_subscriber_reads_a_real_publisher(c_subscriber: Path) -> None:
    validators = {t: jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / f"{t}.schema.json").read_text()))
                  for t in ("decision", "reject", "overlay", "heartbeat")}
    pub = Publisher("tcp://127.0.0.1:0", "c-test", heartbeat_interval=0.05, overlay_pass_every=2,
                    overlay_pool=32).start()
    proc = subprocess.Popen([str(c_subscriber), pub.endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while True:  # slow joiner: produce only once the C side has seen a heartbeat
            line = proc.stdout.readline()
            assert line, f"C subscriber ended early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line)
            if line.startswith("heartbeat "):
                break
        image = np.full((48, 64, 3), 77, np.uint8)
        masks = np.zeros((2, 6, 8), np.float32)
        for i in range(40):
            t = time.time_ns()
            reject = i % 4 == 0
            failsafe = i % 8 == 4
            pub.submit(Decision("cam0", i, t, t + 1000, None if failsafe else (0.8 if reject else 0.2, 0.9),
                                (0.7, 0.7), reject or failsafe, ("dropped",) if failsafe else
                                ("anomaly",) if reject else ("pass",), "present", failsafe),
                       image=None if failsafe else image, masks=masks)
    finally:
        pub.stop()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines += out.splitlines(keepends=True)
    by_topic: dict[str, list[tuple[dict, int, int]]] = {t: [] for t in validators}
    for line in lines:
        topic, frames, payload, header_text = line.rstrip("\n").split(" ", 3)
        header = json.loads(header_text)
        errors = [e.message for e in validators[topic].iter_errors(header)]
        assert not errors, (topic, errors)
        by_topic[topic].append((header, int(frames), int(payload)))
    assert [h["frame_id"] for h, _, _ in by_topic["decision"]] == list(range(40))
    for topic, items in by_topic.items():
        seqs = [h["seq"] for h, _, _ in items]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), topic
    rejects = [h for h, _, _ in by_topic["reject"]]
    assert len(rejects) == 10  # i % 4 == 0; of which i % 8 == 4 are fail-safe (scores null)
    assert [h["scores"] is None for h in rejects] == [i % 8 == 4 for i in range(0, 40, 4)]
    assert all(frames == 3 and payload > 100 for _, frames, payload in by_topic["overlay"])
    assert len(by_topic["overlay"]) == 5 + 15  # every score reject (has an image) + every 2nd of 30 passes
    assert by_topic["heartbeat"][-1][0]["status"] == "stopping"
