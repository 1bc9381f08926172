"""Hostile image files in a replay folder (docs/reliability.md): each file is one decision, a fail-safe
reject ("corrupt") or a frame resized and inferred; never a crash, and memory stays bounded (a 20000 x 20000
PNG is refused from its header, never decoded).

The files: random bytes named .png / .jpg, PNG and JPEG cut short, 16-bit PNG (grey and RGB), a 1 x 1 image,
an RGBA PNG, a 20000 x 20000 PNG of one colour (1.2 MB on disk, 1.2 GB decoded), a zero-byte file, a directory
named x.png, a FIFO, a link to /dev/zero, an unreadable file, a WebP named .png. A hypothesis property feeds
`read_image` random bytes, cuts and byte changes of valid files.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog
from fakes import FakeEngine, FakeLog, FakePublisher
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from linewatch.pipeline.acquire import replay
from linewatch.pipeline.acquire.frames import CorruptFrame
from linewatch.pipeline.acquire.replay import MAX_IMAGE_PIXELS, ReplaySource, image_header, read_image
from linewatch.pipeline.daemon import Daemon
from linewatch.profile import ReplayCamera, parse_profile

RNG = np.random.default_rng(22)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
"""A BGR test image (random: every byte of its files matters)."""


def encoded(ext: str, image: np.ndarray = IMAGE, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def constant_png(path: Path, w: int, h: int, bgr: tuple[int, int, int] = (150, 120, 90), rows: int = 500) -> None:
    """A valid 8-bit RGB PNG of one colour, written without ever holding it decoded: the deflate stream of a
    block of `rows` rows is the same after each full flush, so it is repeated; the Adler-32 runs over it."""
    row = b"\x00" + bytes(bgr[::-1]) * w
    assert h % rows == 0
    block = row * rows
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(block) + c.flush(zlib.Z_FULL_FLUSH) == first
    tail = c.flush()
    adler = 1
    for _ in range(h // rows):
        adler = zlib.adler32(block, adler)
    data = b"\x78\xda" + first * (h // rows) + tail + struct.pack(">I", adler)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20000 x 20000, one colour: 1.2 MB on disk, 1.2 GB decoded."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    constant_png(path, 20000, 20000)
    return path


CORRUPT = "corrupt"
INFERRED = "inferred"


def hostile_folder(folder: Path, huge_png: Path) -> dict[str, tuple[str, str]]:
    """The hostile files (module doc) in `folder`: name -> (what is expected, why)."""
    folder.mkdir()
    png, jpg = encoded(".png"), encoded(".jpg")
    files: dict[str, tuple[bytes, str, str]] = {
        "a-random.png": (RNG.bytes(3000), CORRUPT, "not a PNG, JPEG, BMP or TIFF file"),
        "b-random.jpg": (b"\xff\xd8\xff" + RNG.bytes(3000), CORRUPT, "JPEG"),
        "c-cut.png": (png[: len(png) // 2], CORRUPT, "OpenCV cannot decode this PNG"),
        "d-cut.jpg": (jpg[: len(jpg) // 2], CORRUPT, "JPEG cut short"),
        "e-cut-header.png": (png[:20], CORRUPT, "header cut short"),
        "f-empty.png": (b"", CORRUPT, "empty file"),
        "g-webp-named.png": (encoded(".webp"), CORRUPT, "not a PNG, JPEG, BMP or TIFF file"),
        "h-jpeg-named.png": (jpg, INFERRED, ""),  # the content decides, not the name
        "i-grey16.png": (encoded(".png", (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)), INFERRED, ""),
        "j-rgb16.png": (encoded(".png", np.full((48, 64, 3), 40000, np.uint16)), INFERRED, ""),
        "k-1x1.png": (encoded(".png", IMAGE[:1, :1]), INFERRED, ""),
        "l-rgba.png": (encoded(".png", np.dstack([IMAGE, np.full((48, 64), 7, np.uint8)])), INFERRED, ""),
        "m-image.bmp": (encoded(".bmp"), INFERRED, ""),
        "n-image.tif": (encoded(".tif"), INFERRED, ""),
    }
    for name, (data, _, _) in files.items():
        (folder / name).write_bytes(data)
    (folder / "o-huge.png").write_bytes(huge_png.read_bytes())
    (folder / "p-folder.png").mkdir()
    os.mkfifo(folder / "q-fifo.png")
    (folder / "r-dev-zero.png").symlink_to("/dev/zero")
    expected = {name: (what, why) for name, (_, what, why) in files.items()}
    expected.update({"o-huge.png": (CORRUPT, "20000x20000 = 400000000 pixels, over the replay's limit"),
                     "p-folder.png": (CORRUPT, "not a regular file (a directory)"),
                     "q-fifo.png": (CORRUPT, "not a regular file"),
                     "r-dev-zero.png": (CORRUPT, "not a regular file")})
    return expected


def test_each_hostile_file_is_one_decision_corrupt_or_inferred_and_each_corrupt_one_a_warning(tmp_path, huge_png):
    expected = hostile_folder(tmp_path / "frames", huge_png)
    src = ReplaySource(ReplayCamera(id="cam0", path=str(tmp_path / "frames")))
    assert [p.name for p in src.files] == sorted(expected)
    pub = FakePublisher()
    prof = parse_profile('[model]\nmax_batch = 4\n[ring]\nslots = 32\n[[camera]]\nid = "cam0"\nsource = "replay"\n'
                         f'path = "{tmp_path / "frames"}"\n')
    with structlog.testing.capture_logs() as logs:
        d = Daemon(prof, engine=FakeEngine(), sources=[src], publisher=pub, log=FakeLog())
        d.start()
        assert d.join(30) == 0  # every camera done, no stage failed
    by_file = {src.files[x.frame_id].name: x for x in pub.decisions}
    assert sorted(x.frame_id for x in pub.decisions) == list(range(len(expected)))  # one decision per file
    for name, (what, why) in expected.items():
        x = by_file[name]
        if what == CORRUPT:
            assert x.reasons == ("corrupt",) and x.reject and x.failsafe and x.scores is None, name
            lines = [e["reason"] for e in logs if e["event"] == "corrupt frame dropped" and name in e["reason"]]
            assert len(lines) == 1 and why in lines[0], (name, lines)
        else:
            assert not x.failsafe and x.scores is not None, (name, x.reasons)
    assert src.error is None and src.counters.dropped_corrupt == sum(w == CORRUPT for w, _ in expected.values())


@pytest.mark.parametrize(("name", "make", "bgr"), [
    ("grey16.png", lambda: np.full((8, 8), 40000, np.uint16), (156, 156, 156)),
    ("rgb16.png", lambda: np.dstack([np.full((8, 8), v, np.uint16) for v in (10000, 30000, 60000)]), (39, 117, 234)),
    ("rgba.png", lambda: np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 0)]), (10, 20, 30)),
    ("one.png", lambda: np.full((1, 1, 3), 77, np.uint8), (77, 77, 77)),
])
def test_16_bit_rgba_and_1x1_images_are_read_as_8_bit_bgr(tmp_path, name, make, bgr):
    cv2.imwrite(str(tmp_path / name), make())
    got = read_image(tmp_path / name)
    assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
    assert tuple(int(v) for v in got[0, 0]) == bgr  # 16-bit: the high byte; RGBA: alpha dropped


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 1000), (481, 17), (1024, 768)])
def test_the_header_says_the_size_opencv_decodes(ext, h, w):
    data = encoded(ext, RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
    fmt, hw, hh = image_header(data)
    assert fmt == {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".tif": "TIFF"}[ext]
    assert (hh, hw) == cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]


def test_the_pixel_limit_is_what_decides(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(encoded(".png"))
    monkeypatch.setattr(replay, "MAX_IMAGE_PIXELS", 48 * 64)
    assert read_image(path).shape == (48, 64, 3)
    monkeypatch.setattr(replay, "MAX_IMAGE_PIXELS", 48 * 64 - 1)
    with pytest.raises(CorruptFrame, match=r"x\.png: PNG of 64x48 = 3072 pixels, over the replay's limit of 3071"):
        read_image(path)


def test_a_file_over_the_size_limit_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(encoded(".png"))
    monkeypatch.setattr(replay, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(CorruptFrame, match=r"x\.png: \d+ bytes, over the replay's limit"):
        read_image(path)


UNREADABLE = """
import json, os, sys
from linewatch.pipeline.acquire.frames import CorruptFrame
from linewatch.pipeline.acquire.replay import read_image
try:
    read_image(__import__("pathlib").Path(sys.argv[1]))
    print(json.dumps({"read": True}))
except CorruptFrame as exc:
    print(json.dumps({"read": False, "error": str(exc)}))
"""


def _without_dac_override() -> None:
    """In a child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so a child
    of root obeys file modes (prctl PR_CAPBSET_DROP)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_file_is_corrupt_naming_it(tmp_path):
    """chmod 000. Root reads any file: as root, the check runs in a child process without the capabilities
    that let root ignore file modes."""
    path = tmp_path / "locked.png"
    path.write_bytes(encoded(".png"))
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(CorruptFrame, match=r"cannot read image locked\.png: Permission denied"):
            read_image(path)
        return

    def child() -> dict:
        r = subprocess.run([sys.executable, "-c", UNREADABLE, str(path)], preexec_fn=_without_dac_override,
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)

    try:
        got = child()
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop root's DAC capabilities here: {exc}")
    assert got == {"read": False, "error": "cannot read image locked.png: Permission denied"}
    path.chmod(0o644)  # the guard: the same child reads it once it may
    assert child() == {"read": True}


PEAK = """
import json, sys, threading
from linewatch.pipeline.acquire.replay import ReplaySource
from linewatch.pipeline.ring import Ring
from linewatch.profile import ReplayCamera
src = ReplaySource(ReplayCamera(id="cam0", path=sys.argv[1]))
ring = Ring(4, 512, 1224)
t = src.start(ring, 0, threading.Event())
frames = drops = 0
while True:
    b = ring.take(4, timeout=0.05)
    frames += b.n
    drops += len(list(b.drops()))
    ring.release(b)
    if b.empty and not t.is_alive():
        break
# VmHWM: this process's own peak (ru_maxrss would include the parent's size at fork: it survives exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"frames": frames, "drops": drops, "peak_rss_mib": hwm / 1024}))
"""


def test_replaying_a_20000_x_20000_png_keeps_memory_bounded(tmp_path, huge_png):
    """OpenCV alone decodes it at 2.3 GB peak RSS (measured once, docs/reliability.md); the replay
    refuses it from its header: the whole child process stays under 300 MiB."""
    (tmp_path / "frames").mkdir()
    os.link(huge_png, tmp_path / "frames" / "huge.png")
    r = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "frames")], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"replaying a 20000 x 20000 PNG: {got}")
    assert got["frames"] == 0 and got["drops"] == 1
    assert got["peak_rss_mib"] < 300, got


# -- the property: whatever the bytes, an image within the limit or CorruptFrame ------------------------------

VALID = [encoded(ext) for ext in (".png", ".jpg", ".bmp", ".tif")] + [encoded(".tif", params=(cv2.IMWRITE_TIFF_COMPRESSION, 1))]
"""Valid files of each format (the TIFF also uncompressed), to cut and change."""

hostile_bytes = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda data, cut: data[:cut], st.sampled_from(VALID), st.integers(0, 20000)),
    st.builds(lambda data, at, value: data[: at % len(data)] + bytes([value]) + data[at % len(data) + 1:],
              st.sampled_from(VALID), st.integers(0, 20000), st.integers(0, 255)),
    st.builds(lambda data, at, junk: data[: at % len(data)] + junk, st.sampled_from(VALID), st.integers(0, 20000),
              st.binary(min_size=1, max_size=64)),
    st.builds(lambda magic, rest: magic + rest,
              st.sampled_from([b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*",
                               b"II+\x00"]), st.binary(max_size=200)),
)

@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


WIDE_BMP = (b"BM6$\x00\x00\x00\x00\x00\x006\x00\x00\x00(\x00\x00\x00@\x00\x10\x000\x00\x00\x00\x01\x00\x18\x00"
            + bytes(2000))
"""Found by the property below in CI's first run on main: a BMP 1 048 640 px wide and 48 high (50 Mpx, under
MAX_IMAGE_PIXELS) that OpenCV refuses with cv2.error (wider than its CV_IO_MAX_IMAGE_WIDTH) instead of None."""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_bytes)
@example(data=WIDE_BMP)
def test_any_bytes_are_an_image_within_the_limit_or_corrupt(scratch, data):
    path = scratch / "x.png"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except CorruptFrame as exc:
        assert str(exc).startswith("cannot read image x.png: ") and len(str(exc)) < 300
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert 1 <= image.shape[0] * image.shape[1] <= MAX_IMAGE_PIXELS


@settings(max_examples=150, deadline=None)
@given(data=hostile_bytes)
@example(data=b"BM" + bytes(19) + b"\x80" + bytes(4))  # width -2**31: once found by this test
def test_the_header_reader_gives_a_size_or_a_value_error(data):
    try:
        fmt, w, h = image_header(data)
    except ValueError:
        return
    assert fmt in replay.FORMATS and w >= 0 and h >= 0


def test_a_replay_source_reading_hostile_files_in_a_loop_never_ends_its_thread(tmp_path, huge_png):
    """The acquisition thread meets the hostile files again and again (loop = true): it stays up."""
    from linewatch.pipeline.ring import Ring

    hostile_folder(tmp_path / "frames", huge_png)
    src = ReplaySource(ReplayCamera(id="cam0", path=str(tmp_path / "frames"), loop=True))
    ring = Ring(64, 16, 24)
    stop = threading.Event()
    t = src.start(ring, 0, stop)
    seen = 0
    while seen < 5 * len(src.files):
        b = ring.take(16, timeout=5)
        seen += b.n + len(list(b.drops()))
        ring.release(b)
    stop.set()
    t.join(10)
    assert not t.is_alive() and src.error is None and src.counters.reconnects == 0
