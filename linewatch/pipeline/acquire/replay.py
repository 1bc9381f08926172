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

A video path is opened by OpenCV's FFmpeg backend, which reads a `%` in a file name as a numbered
sequence (`frame%d.png` = frame0.png, frame1.png ...): such a path is refused at start (rename the file).
"""

from __future__ import annotations

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
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise CorruptFrame(f"cannot read image {path.name}", t_capture_ns=t_ns, truth=truth)
        return Grab(image, "BGR8", t_ns, truth)

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
