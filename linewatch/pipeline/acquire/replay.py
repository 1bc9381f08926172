"""Replay a folder of images or a video file as a camera.

* A folder: its images (.png .jpg .jpeg .bmp .tif .tiff), sorted by file name, one frame each.
  When the folder is a linewatch dataset (`labels.csv` + `images/`, see docs/architecture.md),
  the frames are `images/*` and each frame carries its labels as ground truth (blank = unknown);
  `split` keeps only the rows of one split.
* A video file: every frame of it, read with `cv2.VideoCapture`.

Its settings are the profile's `[[camera]]` table (`linewatch.profile.ReplayCamera`, keys in
docs/operations.md): `ReplayCamera(...).make_source(profile)` (the path resolved against the
profile's folder) or `ReplaySource(camera_table, path=...)`.

`loop=True` starts over at the end; `loop=False` ends the stream (the thread ends, state "done").
Frames are paced at `fps` on a monotonic clock (unset or 0 = as fast as they decode). An image that
cannot be read becomes a DROP_CORRUPT record (its truth carried) and a warning naming the file; the
replay goes on with the next one.

Reading an image (`read_image`) is bounded whatever the folder holds. Before decoding, the file must be a
regular file of at most `MAX_FILE_BYTES`, and its header must say PNG, JPEG, BMP or TIFF (by its first
bytes, whatever its name) with width x height of at most `MAX_IMAGE_PIXELS`: a 20000 x 20000 PNG of one
colour is 1.2 MB on disk and 1.2 GB decoded (2.3 GB peak RSS in OpenCV, measured), so it is refused from
its header, never decoded. A JPEG must end with its end-of-image marker (OpenCV decodes a cut JPEG and
greys the missing part: it would be inferred as if whole). Anything else that fails (random bytes, a cut
PNG, a directory, a FIFO, an unreadable file) is corrupt too. 16-bit and RGBA images are read as 8-bit
BGR; every size is resized to the model's input (a 1 x 1 image too).

A video path is opened by OpenCV's FFmpeg backend, which reads a `%` in a file name as a numbered
sequence (`frame%d.png` = frame0.png, frame1.png ...): such a path is refused at start (rename the file).
"""

from __future__ import annotations

import os
import stat
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from linewatch import HEADS
from linewatch.data.dataset import IMAGE_EXTS
from linewatch.pipeline.acquire.base import BaseSource, Grab, SourceError, Truth
from linewatch.pipeline.acquire.frames import CorruptFrame

if TYPE_CHECKING:
    from linewatch.profile import ReplayCamera

MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Most pixels (width x height) of a replayed image: 67 Mpx, above the largest area-scan cameras' 65 Mpx;
decoded as 8-bit BGR that is 192 MiB."""
MAX_FILE_BYTES = 256 * 1024 * 1024
"""Largest replayed image file read (an uncompressed 8-bit RGB image of MAX_IMAGE_PIXELS is 192 MiB)."""
FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
"""What `read_image` decodes (the formats of IMAGE_EXTS), known by the file's first bytes."""

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG start-of-frame markers (the one that holds the size); C4, C8, CC are other segments."""


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG segment marker expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("JPEG without a frame header before its image data")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    raise ValueError("JPEG cut before its frame header")


def _tiff_size(data: bytes) -> tuple[int, int]:
    e = "<" if data[:2] == b"II" else ">"
    if struct.unpack(e + "H", data[2:4])[0] == 43:
        raise ValueError("BigTIFF is not read by the replay")
    off = struct.unpack(e + "I", data[4:8])[0]
    n = struct.unpack(e + "H", data[off:off + 2])[0]
    size: dict[int, int] = {}
    for k in range(n):
        tag, typ, _count = struct.unpack(e + "HHI", data[off + 2 + 12 * k:off + 10 + 12 * k])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            value = data[off + 10 + 12 * k:off + 14 + 12 * k]
            size[tag] = struct.unpack(e + "H", value[:2])[0] if typ == 3 else struct.unpack(e + "I", value)[0]
    if 256 not in size or 257 not in size:
        raise ValueError("TIFF without its width and height")
    return size[256], size[257]


def image_header(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from an image file's bytes, without decoding it; ValueError when its first
    bytes are none of FORMATS or its header is cut or broken."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return "PNG", w, h
        if data[:3] == b"\xff\xd8\xff":
            return ("JPEG", *_jpeg_size(data))
        if data[:2] == b"BM":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                w, h = struct.unpack("<HH", data[18:22])
            else:
                w, h = struct.unpack("<ii", data[18:26])  # a negative height is a top-down bitmap
            if w < 0:
                raise ValueError(f"BMP width {w} < 0")
            return "BMP", w, abs(h)
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return ("TIFF", *_tiff_size(data))
    except struct.error:
        raise ValueError("header cut short") from None
    raise ValueError(f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file (by its first bytes)")


def read_image(path: Path, *, t_capture_ns: int | None = None, truth: Truth = (-1, -1)) -> np.ndarray:
    """The image at `path` as BGR uint8 [H, W, 3], read within the bounds of the module doc; CorruptFrame
    naming the file and why (with `t_capture_ns` and `truth` for its drop record) when it cannot be."""

    def corrupt(why: str) -> CorruptFrame:
        return CorruptFrame(f"cannot read image {path.name}: {why}", t_capture_ns=t_capture_ns, truth=truth)

    try:  # O_NONBLOCK: a FIFO named x.png must not block the camera's thread in open()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise corrupt(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise corrupt("not a regular file" + (" (a directory)" if stat.S_ISDIR(st.st_mode) else ""))
        if st.st_size > MAX_FILE_BYTES:
            raise corrupt(f"{st.st_size} bytes, over the replay's limit of {MAX_FILE_BYTES} (MAX_FILE_BYTES)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise corrupt(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if not data:
        raise corrupt("empty file")
    if len(data) > MAX_FILE_BYTES:
        raise corrupt(f"over the replay's limit of {MAX_FILE_BYTES} bytes (MAX_FILE_BYTES)")
    try:
        fmt, w, h = image_header(data)
    except ValueError as exc:
        raise corrupt(str(exc)) from None
    if w < 1 or h < 1:
        raise corrupt(f"{fmt} header says {w}x{h} pixels")
    if w * h > MAX_IMAGE_PIXELS:
        raise corrupt(f"{fmt} of {w}x{h} = {w * h} pixels, over the replay's limit of {MAX_IMAGE_PIXELS} "
                      "(MAX_IMAGE_PIXELS): not decoded")
    if fmt == "JPEG" and not data[-4096:].rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise corrupt("JPEG cut short (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a BMP whose header OpenCV reads as another size than image_header did
        raise corrupt(f"OpenCV refuses this {fmt}: {str(exc).strip().splitlines()[-1][:160]}") from None
    if image is None:
        raise corrupt(f"OpenCV cannot decode this {fmt} ({len(data)} bytes; cut short or broken)")
    return image


def read_dataset_truth(root: Path, split: str | None = None) -> dict[str, tuple[Truth, str]]:
    """{image stem: ((anomaly, adhesive), split)} of a linewatch dataset folder (-1 = unknown), read by
    `linewatch.data.dataset.open_dataset` (the one reader of labels.csv)."""
    from linewatch.data.dataset import open_dataset
    from linewatch.errors import DatasetError

    try:
        ds = open_dataset(root)
    except DatasetError as exc:
        raise SourceError(str(exc)) from exc
    out: dict[str, tuple[Truth, str]] = {}
    for s in ds.samples:
        if split is None or s.split == split:
            a, h = (-1 if (v := s.labels[head]) is None else int(v) for head in HEADS)
            out[s.name] = ((a, h), s.split)
    return out


class ReplaySource(BaseSource):
    """Frames from a folder of images or a video file (module doc)."""

    kind = "replay"

    def __init__(self, config: ReplayCamera, *, path: str | Path | None = None) -> None:
        """`path`: where `config.path` is (the profile resolves it against its folder); None = as written."""
        super().__init__(config.id, roi=config.roi, fps=config.fps or 0.0)
        self.config = config
        path = Path(config.path if path is None else path)
        if not path.exists():
            raise SourceError(f"replay path {path} does not exist (a folder of images or a video file)")
        self.files: list[Path] = []
        self.truth: list[Truth] = []
        self.video: Path | None = None
        if path.is_dir():
            if (path / "labels.csv").is_file() and (path / "images").is_dir():
                labels = read_dataset_truth(path, config.split)
                files = sorted(p for p in (path / "images").iterdir() if p.suffix.lower() in IMAGE_EXTS)
                if config.split is not None:
                    files = [p for p in files if p.stem in labels]
                self.files = files
                self.truth = [labels[p.stem][0] if p.stem in labels else (-1, -1) for p in files]
            else:
                if config.split is not None:
                    raise SourceError(f"replay split={config.split!r} needs a dataset folder (labels.csv + images/): {path}")
                self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
                self.truth = [(-1, -1)] * len(self.files)
            if not self.files:
                raise SourceError(
                    f"replay folder {path} holds no images ({', '.join(IMAGE_EXTS)})"
                    + (f" of split {config.split!r}" if config.split is not None else "")
                )
        else:
            if "%" in path.name:
                raise SourceError(f"replay video {path}: OpenCV reads a '%' in a file name as a numbered sequence "
                                  "(frame%d.png = frame0.png, frame1.png ...), not as this file: rename it")
            self.video = path.absolute()  # absolute: FFmpeg never reads it as a protocol (concat:, pipe:)
        self._cap: cv2.VideoCapture | None = None
        self._buf: np.ndarray | None = None
        self._i = 0

    def _prepare(self) -> None:
        self._open()  # a video OpenCV cannot open fails `start` at once

    def _open(self) -> None:
        if self.video is not None and self._cap is None:
            cap = cv2.VideoCapture(str(self.video))
            if not cap.isOpened():
                raise SourceError(f"replay cannot open video {self.video} (not a video OpenCV can decode)")
            self._cap = cap

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _grab(self) -> Grab | None:
        if self.video is not None:
            return self._grab_video()
        if self._i >= len(self.files):
            if not self.config.loop:
                return None
            self._i = 0
        i = self._i
        self._i += 1
        path, truth = self.files[i], self.truth[i]
        t_ns = time.time_ns()
        return Grab(read_image(path, t_capture_ns=t_ns, truth=truth), "BGR8", t_ns, truth)

    def _grab_video(self) -> Grab | None:
        cap = self._cap
        assert cap is not None
        ok, frame = cap.read(self._buf)
        if not ok and self.config.loop:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = cap.read(self._buf)
        if not ok:
            return None
        self._buf = frame
        return Grab(frame, "BGR8", time.time_ns())
