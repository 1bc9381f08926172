"""Synthetic battery-cell surfaces with anomalies, adhesive bars and nuisances (SPEC §4).

Every image is a deterministic function of ``(seed, index, cfg)``: its random generator is
``np.random.default_rng([seed, index])`` and nothing global is cached, so any image of a stream
can be rendered alone, in any order, in any process.

What is drawn, in order (RGB, float32 in grey levels 0..255, rounded to uint8 at the end):

1. the surface: aluminium-laminate film, silver-grey with a slight colour cast; illumination
   gradient and vignetting with a per-image gain (illumination drift); faint roller bands
   (horizontal) and column fixed-pattern (vertical); brushed streaks along the rows; fine grain;
2. nuisances, NOT anomalies and in no mask: wrinkles (long soft low-contrast folds, lit on one
   side), tarnish (large soft discoloured regions), dust (a few tiny, soft, faint specks
   without a rim: Gaussian blobs, unlike the crisp rimmed cavities);
3. adhesive bars: slim translucent amber or white glue bars, 14-40 px thick, horizontal or
   vertical, of varying position and length, sometimes broken into fragments; a specular
   line along the bar and a darker meniscus at its edges;
4. anomalies (mini-scale, a few to a few hundred px, contrast drawn log-uniformly from
   ``cfg.contrast`` grey levels, dark or bright): scratches (thin, possibly curved lines, some
   grooves with a light and a dark side), cavities (crisp pits with a rim), corrosion traces
   (irregular blotchy spots with speckle, dark-brownish or white-powdery);
5. sensor noise.

Masks (exact): the anomaly mask is the pixels where an anomaly's rendered alpha is >= 0.25,
dilated by 1 px (3x3); the adhesive mask is the pixels where a bar's alpha is >= half its
opacity (the glue body up to the middle of its soft edge), not dilated. Labels are computed
from the masks: label 1 iff the mask is non-empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from linewatch import HEADS

ANOMALY_KINDS: tuple[str, ...] = ("scratch", "cavity", "corrosion")
NUISANCE_KINDS: tuple[str, ...] = ("wrinkle", "tarnish", "dust")

ANOMALY_ALPHA_THRESHOLD = 0.25
"""An anomaly pixel is in the mask when its rendered alpha reaches this (then 1 px dilation)."""


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic battery-cell surface renderer (all defaults give the shipped mix)."""

    height: int = 512
    width: int = 1224
    anomaly_rate: float = 0.5
    """Share of images with at least one anomaly (label anomaly = 1)."""
    adhesive_rate: float = 0.6
    """Share of images with adhesive (label adhesive = 1)."""
    max_anomalies: int = 3
    """An anomalous image has 1..max_anomalies anomalies (geometric, mostly 1)."""
    anomaly_weights: tuple[float, float, float] = (0.4, 0.35, 0.25)
    """Relative frequency of scratch, cavity, corrosion."""
    anomaly_on_adhesive: float = 0.0
    """Share of anomalies centred on an adhesive bar when the image has one (0: placed anywhere, where
    they land on glue in ~6 % of defective cells). A training mix can raise it: defects on glue are
    rare by area but real (docs/model.md). 0 keeps every stream identical to the default."""
    contrast: tuple[float, float] = (12.0, 60.0)
    """Anomaly contrast range in grey levels (log-uniform); the low end is subtle but visible.
    Small anomalies get up to 2-2.5x more (a 2 px pit at 12 levels would drown in the noise)."""
    max_bars: int = 2
    """An image with adhesive has 1..max_bars bars."""
    fragment_rate: float = 0.3
    """Share of bars broken into 2-4 fragments."""
    wrinkle_rate: float = 0.45
    tarnish_rate: float = 0.35
    dust_rate: float = 0.6
    max_dust: int = 8
    noise_sigma: tuple[float, float] = (1.5, 3.0)
    """Sensor noise standard deviation range in grey levels."""
    mask_dilation: int = 1
    """Anomaly mask dilation in pixels (square structuring element)."""

    def __post_init__(self) -> None:
        if self.height % 8 or self.width % 8 or self.height < 128 or self.width < 128:
            raise ValueError(f"synth size {self.height}x{self.width}: both must be >= 128 and divisible by 8")
        for name in (
            "anomaly_rate",
            "adhesive_rate",
            "fragment_rate",
            "wrinkle_rate",
            "tarnish_rate",
            "dust_rate",
            "anomaly_on_adhesive",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SynthConfig.{name}={v}: must be in [0, 1]")
        if min(self.anomaly_weights) < 0.0 or sum(self.anomaly_weights) <= 0.0:
            raise ValueError(
                f"SynthConfig.anomaly_weights={self.anomaly_weights}: must be >= 0 each with a positive sum"
            )
        lo, hi = self.contrast
        if not 0.0 < lo <= hi <= 255.0:
            raise ValueError(
                f"SynthConfig.contrast={self.contrast}: must be (lo, hi) grey levels, 0 < lo <= hi <= 255"
            )


@dataclass
class SynthSample:
    """One rendered surface: image, masks (channel order ``linewatch.HEADS``), labels, what was drawn."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (2, H, W) uint8 in {0, 1}
    labels: tuple[int, int]  # (anomaly, adhesive)
    kinds: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Unit-ish noise drawn at ``shape`` and resized (bicubic) to ``out_hw`` (H, W)."""
    import cv2

    n = rng.standard_normal(shape, dtype=np.float32)
    return cv2.resize(n, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_CUBIC)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


class _Canvas:
    """The float image being drawn plus the optional mask accumulators."""

    def __init__(self, img: np.ndarray, with_masks: bool):
        self.img = img
        h, w = img.shape[:2]
        self.h, self.w = h, w
        self.anomaly = np.zeros((h, w), np.uint8) if with_masks else None
        self.adhesive = np.zeros((h, w), np.uint8) if with_masks else None
        self.glue: list[tuple[int, int, np.ndarray, bool]] = []
        """Per bar drawn: (row, col) offset of its body mask (alpha >= half opacity), the mask, transposed."""

    def patch(self, y0: int, x0: int, ph: int, pw: int) -> tuple[slice, slice, int, int]:
        """Clip a patch to the image: (row slice, col slice, offset y, offset x) in patch coordinates."""
        ya, xa = max(0, y0), max(0, x0)
        yb, xb = min(self.h, y0 + ph), min(self.w, x0 + pw)
        return slice(ya, yb), slice(xa, xb), ya - y0, xa - x0

    def add(self, y0: int, x0: int, delta: np.ndarray, alpha: np.ndarray | None) -> None:
        """Add ``delta`` (ph, pw, 3) or (ph, pw) at (y0, x0); OR ``alpha >= threshold`` into the anomaly mask."""
        ph, pw = delta.shape[:2]
        ys, xs, oy, ox = self.patch(y0, x0, ph, pw)
        if ys.stop <= ys.start or xs.stop <= xs.start:
            return
        sub = delta[oy : oy + ys.stop - ys.start, ox : ox + xs.stop - xs.start]
        if sub.ndim == 2:
            sub = sub[..., None]
        self.img[ys, xs] += sub
        if alpha is not None and self.anomaly is not None:
            a = alpha[oy : oy + ys.stop - ys.start, ox : ox + xs.stop - xs.start]
            self.anomaly[ys, xs] |= (a >= ANOMALY_ALPHA_THRESHOLD).astype(np.uint8)


# ----------------------------------------------------------------------------------- surface


def _surface(rng: np.random.Generator, cfg: SynthConfig, kinds: list[str]) -> np.ndarray:
    """The film with illumination, bands, wrinkles and tarnish (low-res) and streaks/grain (full-res)."""
    import cv2

    H, W = cfg.height, cfg.width
    h4, w4 = H // 4, W // 4
    yy = np.linspace(-1.0, 1.0, h4, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, w4, dtype=np.float32)[None, :]
    aspect = W / H

    # illumination: per-image gain (drift), gradient plane, off-centre vignetting, low mottle
    level = rng.uniform(115.0, 165.0)
    gx, gy = rng.uniform(-0.12, 0.12), rng.uniform(-0.10, 0.10)
    cx, cy = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)
    vig = rng.uniform(0.08, 0.3)
    r2 = ((xx - cx) * aspect / 2.0) ** 2 + (yy - cy) ** 2
    illum = (1.0 + gx * xx + gy * yy) * (1.0 - vig * r2 / (1.0 + aspect**2 / 4.0))  # r2 norm.: 1 at corners
    illum = illum + 0.012 * _smooth_noise(rng, (4, 9), (h4, w4))
    # roller bands (horizontal structure)
    n_bands = int(rng.integers(2, 5))
    band = np.zeros((h4, 1), np.float32)
    for _ in range(n_bands):
        band += rng.uniform(0.003, 0.012) * np.sin(
            yy * rng.uniform(4.0, 30.0) + rng.uniform(0, 2 * math.pi)
        ).astype(np.float32)
    lum = level * (illum + band)

    # wrinkles: long soft folds, shading = derivative of a Gaussian across the fold
    if rng.random() < cfg.wrinkle_rate:
        for _ in range(int(rng.integers(1, 3))):
            kinds.append("wrinkle")
            ang = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.35 else 0.0)
            ca, sa = math.cos(ang), math.sin(ang)
            px, py = xx * aspect, yy  # isotropic coordinates
            u = px * ca + py * sa
            v = -px * sa + py * ca
            v0 = rng.uniform(-0.7, 0.7)
            curve = v0 + rng.uniform(0.02, 0.15) * np.sin(u * rng.uniform(1.0, 3.0) + rng.uniform(0, 6.3))
            sig = rng.uniform(0.05, 0.12)  # 13-30 px: soft
            d = (v - curve) / sig
            amp = rng.uniform(5.0, 12.0) * (1.0 if rng.random() < 0.5 else -1.0)
            fade = np.clip(
                1.2 - np.abs(u - rng.uniform(-1, 1) * aspect) / (aspect * rng.uniform(0.6, 1.5)), 0, 1
            )
            lum = lum + (amp * d * np.exp(-0.5 * d * d) * fade).astype(np.float32)

    # colour cast: silver-grey, slightly warm or cool
    cast = np.array([1.0, 1.0, 1.0], np.float32) + rng.normal(0.0, 0.008, 3).astype(np.float32)
    warm = rng.uniform(-0.035, 0.035)
    cast += np.array([warm, 0.0, -warm], np.float32)
    low = lum[..., None] * cast[None, None, :]

    # tarnish: large soft discoloured regions
    if rng.random() < cfg.tarnish_rate:
        for _ in range(int(rng.integers(1, 3))):
            kinds.append("tarnish")
            blob = _smooth_noise(rng, (4, 8), (h4, w4))
            ex, ey = rng.uniform(-0.8, 0.8) * aspect, rng.uniform(-0.8, 0.8)
            rad = rng.uniform(0.25, 0.7)
            env = np.exp(-(((xx * aspect - ex) ** 2 + (yy - ey) ** 2) / (2 * rad * rad)))
            weight = np.clip(env * (0.8 + 0.5 * blob), 0.0, 1.0)
            tint = np.array(
                [(10.0, 4.0, -8.0), (-6.0, -1.0, 9.0), (-9.0, -7.0, -5.0), (8.0, 5.0, -4.0)][
                    int(rng.integers(0, 4))
                ],
                np.float32,
            ) * rng.uniform(0.6, 1.3)
            low = low + weight[..., None] * tint[None, None, :]

    img: np.ndarray = cv2.resize(low, (W, H), interpolation=cv2.INTER_LINEAR)

    # full-res detail (one channel): brushed streaks along rows, fine grain, column pattern
    streak = _smooth_noise(rng, (H, max(4, W // 48)), (H, W))
    detail = streak * np.float32(rng.uniform(1.2, 3.0))
    grain = rng.standard_normal((H // 2, W // 2), dtype=np.float32)
    detail += cv2.resize(grain, (W, H), interpolation=cv2.INTER_LINEAR) * np.float32(rng.uniform(1.0, 2.5))
    detail += rng.standard_normal((1, W), dtype=np.float32) * np.float32(rng.uniform(0.2, 0.8))
    img += detail[..., None]
    return img


def _dust(rng: np.random.Generator, cv: _Canvas, cfg: SynthConfig, kinds: list[str]) -> None:
    """Tiny, soft, faint specks (Gaussian, no rim): a nuisance, in no mask."""
    if rng.random() >= cfg.dust_rate:
        return
    for _ in range(int(rng.integers(1, cfg.max_dust + 1))):
        kinds.append("dust")
        sig = rng.uniform(1.5, 3.5)
        amp = rng.uniform(6.0, 18.0) * (1.0 if rng.random() < 0.7 else -1.0)
        r = int(math.ceil(3 * sig))
        y, x = int(rng.integers(0, cv.h)), int(rng.integers(0, cv.w))
        g = np.arange(-r, r + 1, dtype=np.float32)
        el = rng.uniform(0.6, 1.0)
        blob = np.exp(-0.5 * ((g[:, None] / (sig * el)) ** 2 + (g[None, :] / sig) ** 2))
        cv.add(y - r, x - r, (amp * blob).astype(np.float32), None)


# ----------------------------------------------------------------------------------- adhesive


def _bar(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray | None, look: dict
) -> tuple[int, int, np.ndarray] | None:
    """One horizontal glue bar (callers pass transposed views for vertical bars).

    Returns the bar's body mask and its (row, col) offset in ``img``'s frame (None if off the image).
    """
    h, w = img.shape[:2]
    t = look["thickness"] * rng.uniform(0.9, 1.1)
    length = rng.uniform(0.25, 1.0) * w
    x0 = rng.uniform(-0.1 * w, w - 0.6 * length)
    x1 = min(x0 + length, w + 0.1 * w)
    yc = rng.uniform(t, h - t)
    # fragments: split [x0, x1] by gaps
    pieces = [(x0, x1)]
    if rng.random() < look["fragment_rate"]:
        n = int(rng.integers(2, 5))
        cuts = np.sort(rng.uniform(x0 + 0.1 * (x1 - x0), x1 - 0.1 * (x1 - x0), n - 1))
        edges = [x0]
        for c in cuts:
            gap = rng.uniform(8.0, 60.0)
            edges += [c - gap / 2, c + gap / 2]
        edges.append(x1)
        pieces = [
            (edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] - edges[i] > 2.5 * t
        ]
        if not pieces:
            pieces = [(x0, x1)]
    pad = int(t / 2 + 8)
    ya, yb = int(max(0, yc - pad)), int(min(h, yc + pad + 1))
    xa, xb = int(max(0, math.floor(x0))), int(min(w, math.ceil(x1) + 1))
    if yb <= ya or xb <= xa:
        return None
    ys = np.arange(ya, yb, dtype=np.float32)[:, None]
    xs = np.arange(xa, xb, dtype=np.float32)[None, :]
    # wobble of the centre line and of the half-thickness along the bar
    nk = max(4, (xb - xa) // 80)
    wob_c = np.interp(xs[0], np.linspace(xa, xb, nk), rng.normal(0, 1.2, nk)).astype(np.float32)[None, :]
    wob_t = np.interp(xs[0], np.linspace(xa, xb, nk), rng.normal(0, 1.0, nk)).astype(np.float32)[None, :]
    slope = rng.normal(0, 0.004)
    centre = yc + wob_c + slope * (xs - xa)
    half = t / 2 + wob_t
    d = np.abs(ys - centre)
    body = np.zeros((yb - ya, xb - xa), np.float32)
    for p0, p1 in pieces:
        # rounded ends: distance beyond the cap centre along the bar
        end = np.maximum(np.maximum(p0 + half - xs, xs - (p1 - half)), 0.0)
        dist = np.sqrt(d * d + end * end) - half  # < 0 inside
        body = np.maximum(body, np.clip(0.5 - dist / look["edge"], 0.0, 1.0))
    # glue thickness (so opacity) varies slowly along the bar
    wob_a = np.interp(xs[0], np.linspace(xa, xb, nk), rng.normal(0, 0.1, nk)).astype(np.float32)[None, :]
    alpha = body * np.clip(look["opacity"] * (1.0 + wob_a), 0.2, 0.9)
    sub = img[ya:yb, xa:xb]
    colour = look["colour"]
    under = sub * (1.0 - alpha[..., None]) + colour[None, None, :] * alpha[..., None]
    # specular line along the bar and a darker meniscus at the edges
    rel = (ys - centre) / np.maximum(half, 1.0)
    spec = np.exp(-(((rel - look["spec_offset"]) / 0.12) ** 2)) * look["spec"]
    menis = np.exp(-(((np.abs(rel) - 0.85) / 0.1) ** 2)) * look["meniscus"]
    under += ((spec - menis) * body)[..., None]
    sub[...] = under
    inside = body >= 0.5
    if mask is not None:
        mask[ya:yb, xa:xb] |= inside.astype(np.uint8)
    return ya, xa, inside


def _adhesive(rng: np.random.Generator, cv: _Canvas, cfg: SynthConfig, kinds: list[str]) -> None:
    amber = rng.random() < 0.6
    colour = (
        np.array([205.0, 150.0, 60.0], np.float32) if amber else np.array([235.0, 232.0, 220.0], np.float32)
    ) * np.float32(rng.uniform(0.9, 1.05))
    look = {
        "thickness": rng.uniform(14.0, 40.0),
        "colour": colour,
        "opacity": rng.uniform(0.4, 0.7),
        "edge": rng.uniform(1.5, 3.0),
        "spec": rng.uniform(10.0, 30.0),
        "spec_offset": rng.uniform(-0.4, 0.4),
        "meniscus": rng.uniform(5.0, 15.0),
        "fragment_rate": cfg.fragment_rate,
    }
    vertical = rng.random() < 0.3
    for _ in range(int(rng.integers(1, cfg.max_bars + 1))):
        kinds.append("adhesive")
        if vertical:
            mask_t = cv.adhesive.T if cv.adhesive is not None else None
            body = _bar(rng, cv.img.transpose(1, 0, 2), mask_t, look)
        else:
            body = _bar(rng, cv.img, cv.adhesive, look)
        if body is not None and body[2].any():
            cv.glue.append((*body, vertical))


# ----------------------------------------------------------------------------------- anomalies


def _scratch(rng: np.random.Generator, cv: _Canvas, amp: float, at: tuple[int, int] | None = None) -> None:
    import cv2

    length = min(_loguniform(rng, 15.0, 350.0), 0.8 * min(cv.h, cv.w))
    amp *= float(np.clip(40.0 / length, 1.0, 2.0))  # short scratches need contrast to be seen
    ang = rng.uniform(0, math.pi)
    bend = float(np.clip(rng.normal(0, 0.15), -0.3, 0.3)) * length
    thick = int(rng.choice([1, 1, 2, 2, 3]))
    m = int(length / 2 + abs(bend) + 6)
    size = 2 * m + 1
    # (max(...): on small canvases a long scratch may run off the edge; cv.add clips it)
    if at is None:
        y = int(rng.integers(m // 2, max(cv.h - m // 2, m // 2 + 1)))
        x = int(rng.integers(m // 2, max(cv.w - m // 2, m // 2 + 1)))
    else:  # the curve's midpoint (t = 1/2, offset by half the bend) on the given point
        y = at[0] - round(math.cos(ang) * bend / 2)
        x = at[1] + round(math.sin(ang) * bend / 2)
    # quadratic Bezier through a bent control point, with a fade at both ends
    t = np.linspace(0, 1, 24)
    ca, sa = math.cos(ang), math.sin(ang)
    p0 = np.array([m - ca * length / 2, m - sa * length / 2])
    p2 = np.array([m + ca * length / 2, m + sa * length / 2])
    pc = np.array([m - sa * bend, m + ca * bend])
    pts = (1 - t)[:, None] ** 2 * p0 + 2 * ((1 - t) * t)[:, None] * pc + (t**2)[:, None] * p2
    prof = np.clip(np.minimum(t, 1 - t) * rng.uniform(4, 10), 0.3, 1.0) * rng.uniform(0.7, 1.0, len(t))
    canvas = np.zeros((size, size), np.uint8)
    fix = (pts * 16).astype(np.int32)
    for i in range(len(t) - 1):
        val = int(255 * 0.5 * (prof[i] + prof[i + 1]))
        cv2.line(canvas, tuple(fix[i]), tuple(fix[i + 1]), val, thick, cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) / 255.0
    delta = amp * alpha
    if rng.random() < 0.4:  # groove: the opposite shade on one side
        shifted = np.roll(alpha, (1, 1), axis=(0, 1))
        delta -= 0.6 * amp * shifted
        alpha = np.maximum(alpha, shifted)
    cv.add(y - m, x - m, delta, alpha)


def _cavity(rng: np.random.Generator, cv: _Canvas, amp: float, at: tuple[int, int] | None = None) -> None:
    r = _loguniform(rng, 1.5, 10.0)
    amp *= float(np.clip(4.0 / r, 1.0, 2.5))  # tiny pits need contrast to be seen
    el = rng.uniform(0.6, 1.0)
    rw = max(1.0, 0.35 * r)
    m = int(math.ceil(r + rw + 3))
    y, x = at if at is not None else (int(rng.integers(m, cv.h - m)), int(rng.integers(m, cv.w - m)))
    g = np.arange(-m, m + 1, dtype=np.float32)
    ang = rng.uniform(0, math.pi)
    ca, sa = math.cos(ang), math.sin(ang)
    u = g[None, :] * ca + g[:, None] * sa
    v = (-g[None, :] * sa + g[:, None] * ca) / el
    d = np.sqrt(u * u + v * v)
    inner = np.clip(r - d + 0.5, 0.0, 1.0)  # crisp pit (1 px anti-aliased edge)
    rim = np.clip(1.0 - np.abs(d - (r + rw / 2)) / (rw / 2 + 0.5), 0.0, 1.0)
    shade = 0.75 + 0.25 * np.clip(u / max(r, 1.0), -1, 1)  # lit from one side
    delta = -amp * inner * shade + 0.55 * amp * rim
    cv.add(y - m, x - m, delta.astype(np.float32), np.maximum(inner, rim))


def _corrosion(rng: np.random.Generator, cv: _Canvas, amp: float, at: tuple[int, int] | None = None) -> None:
    import cv2

    s = min(_loguniform(rng, 8.0, 120.0), 0.5 * min(cv.h, cv.w))
    amp *= float(np.clip(24.0 / s, 1.0, 2.0))  # small traces need contrast to be seen
    m = int(s / 2 + 4)
    size = 2 * m + 1
    y, x = at if at is not None else (int(rng.integers(m, cv.h - m)), int(rng.integers(m, cv.w - m)))
    k = int(rng.integers(4, 9))
    noise = cv2.resize(
        rng.standard_normal((k, k), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    g = np.linspace(-1, 1, size, dtype=np.float32)
    el = rng.uniform(0.5, 1.0)
    r2 = (g[None, :] ** 2 + (g[:, None] / el) ** 2) * (size / (s + 1e-6)) ** 2
    field_ = 0.45 * noise + 1.3 * (1.0 - r2)
    alpha = np.clip((field_ - 0.9) / 0.2, 0.0, 1.0)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0.7)
    if alpha.max() < 0.5:  # degenerate draw: keep a small core so the label stays true
        alpha = np.maximum(alpha, np.clip(1.2 - 3.0 * r2, 0.0, 1.0))
    speck = rng.standard_normal((size // 2 + 1, size // 2 + 1), dtype=np.float32)
    speck = 0.65 + 0.35 * np.clip(cv2.resize(speck, (size, size), interpolation=cv2.INTER_LINEAR), -1, 1)
    if amp < 0:  # dark brownish trace
        tint = np.array([0.85, 1.0, 1.25], np.float32)
    else:  # white powdery trace
        tint = np.array([1.0, 1.0, 0.9], np.float32)
    delta = (amp * alpha * speck)[..., None] * tint[None, None, :]
    cv.add(y - m, x - m, delta, alpha)


_DRAW = {"scratch": _scratch, "cavity": _cavity, "corrosion": _corrosion}


def _anomalies(rng: np.random.Generator, cv: _Canvas, cfg: SynthConfig, kinds: list[str]) -> None:
    n = 1
    while n < cfg.max_anomalies and rng.random() < 0.35:
        n += 1
    p = np.asarray(cfg.anomaly_weights, float)
    p = p / p.sum()
    for _ in range(n):
        kind = ANOMALY_KINDS[int(rng.choice(len(ANOMALY_KINDS), p=p))]
        kinds.append(kind)
        amp = _loguniform(rng, *cfg.contrast)
        if kind == "cavity":
            amp *= 1.0 if rng.random() < 0.8 else -1.0  # mostly dark pits with a bright rim
        else:
            amp *= 1.0 if rng.random() < 0.5 else -1.0
        at = None
        if cfg.anomaly_on_adhesive > 0 and cv.glue and rng.random() < cfg.anomaly_on_adhesive:
            ya, xa, inside, transposed = cv.glue[int(rng.integers(len(cv.glue)))]
            pts = np.argwhere(inside)
            r, c = pts[int(rng.integers(len(pts)))]
            r, c = int(r) + ya, int(c) + xa  # in the (possibly transposed) frame the bar was drawn in
            at = (c, r) if transposed else (r, c)
        _DRAW[kind](rng, cv, float(amp), at)


# ----------------------------------------------------------------------------------- public API


def _render(
    seed: int, index: int, cfg: SynthConfig, with_masks: bool
) -> tuple[np.ndarray, _Canvas, list[str]]:
    rng = np.random.default_rng([int(seed), int(index)])
    want_anomaly = rng.random() < cfg.anomaly_rate
    want_adhesive = rng.random() < cfg.adhesive_rate
    kinds: list[str] = []
    img = _surface(rng, cfg, kinds)
    cv = _Canvas(img, with_masks)
    _dust(rng, cv, cfg, kinds)
    if want_adhesive:
        _adhesive(rng, cv, cfg, kinds)
    if want_anomaly:
        _anomalies(rng, cv, cfg, kinds)
    noise = rng.standard_normal((cfg.height, cfg.width), dtype=np.float32)
    noise *= np.float32(rng.uniform(*cfg.noise_sigma))
    noise += np.float32(0.5)  # rounding offset for the truncating cast below
    img += noise[..., None]
    np.clip(img, 0.0, 255.0, out=img)
    return img, cv, kinds


def render(seed: int, index: int, cfg: SynthConfig = SynthConfig()) -> SynthSample:
    """Render image ``index`` of stream ``seed`` (deterministic: rng = default_rng([seed, index]))."""
    import cv2

    img, cv, kinds = _render(seed, index, cfg, with_masks=True)
    assert cv.anomaly is not None and cv.adhesive is not None
    if cfg.mask_dilation > 0 and cv.anomaly.any():
        k = 2 * cfg.mask_dilation + 1
        cv.anomaly = np.asarray(cv2.dilate(cv.anomaly, np.ones((k, k), np.uint8)), np.uint8)
    masks = np.stack([cv.anomaly, cv.adhesive])
    labels = (int(masks[0].any()), int(masks[1].any()))
    return SynthSample(image=img.astype(np.uint8), masks=masks, labels=labels, kinds=kinds)


def render_into(
    seed: int, index: int, out_image: np.ndarray, cfg: SynthConfig = SynthConfig()
) -> tuple[int, int]:
    """Render the image of (seed, index) into ``out_image`` (H, W, 3) uint8; returns the labels.

    Same pixels as :func:`render` (masks are not built; labels come from what was drawn).
    """
    if out_image.shape != (cfg.height, cfg.width, 3) or out_image.dtype != np.uint8:
        raise ValueError(
            f"out_image must be uint8 ({cfg.height}, {cfg.width}, 3), got {out_image.dtype} {out_image.shape}"
        )
    img, _, kinds = _render(seed, index, cfg, with_masks=False)
    out_image[...] = img  # truncating cast of values already offset by 0.5 and clipped
    return (int(any(k in ANOMALY_KINDS for k in kinds)), int("adhesive" in kinds))


def write_dataset(
    out: str | Path,
    count: int,
    seed: int,
    cfg: SynthConfig = SynthConfig(),
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    jobs: int = 1,
) -> Path:
    """Render ``count`` images into a folder-format dataset at ``out`` (both masks always written).

    The split is by index: the last ``round(test_fraction * count)`` are ``test``, the
    ``round(val_fraction * count)`` before them ``val``, the rest ``train``. ``out`` must not
    already hold a labels.csv. Output files are byte-identical for the same arguments, whatever
    ``jobs`` (processes rendering and encoding in parallel; labels.csv is written in index order
    by this process alone).
    """
    from linewatch.data.dataset import LABELS_FILE
    from linewatch.data.write import append_label_row
    from linewatch.errors import DatasetError

    out = Path(out)
    if count < 1:
        raise DatasetError(f"count {count}: must be >= 1")
    if not (
        0.0 <= val_fraction <= 1.0 and 0.0 <= test_fraction <= 1.0 and val_fraction + test_fraction <= 1.0
    ):
        raise DatasetError(f"val {val_fraction} + test {test_fraction}: each in [0, 1], sum at most 1")
    if jobs < 1:
        raise DatasetError(f"jobs {jobs}: must be >= 1")
    if (out / LABELS_FILE).exists():
        raise DatasetError(
            f"{out / LABELS_FILE}: already exists; write a synthetic dataset into a new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    n_test = round(test_fraction * count)
    n_val = round(val_fraction * count)
    width = max(5, len(str(count - 1)))
    tasks = []
    for i in range(count):
        split = "test" if i >= count - n_test else "val" if i >= count - n_test - n_val else "train"
        tasks.append((str(out), seed, i, f"s{seed}_{i:0{width}d}", split, cfg))
    rows: Iterator[tuple[str, str, tuple[int, int]]]
    if jobs == 1:
        rows = map(_write_one, tasks)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(jobs)
        rows = pool.imap(_write_one, tasks, chunksize=4)
    try:
        for name, split, labels in rows:
            append_label_row(out, name, split, dict(zip(HEADS, labels, strict=True)), group="synthetic")
    finally:
        if jobs > 1:
            pool.close()
            pool.join()
    return out


def _write_one(task: tuple[str, int, int, str, str, SynthConfig]) -> tuple[str, str, tuple[int, int]]:
    """Render one sample and write its files (no labels.csv row); a process-pool task."""
    from linewatch.data.write import write_sample

    out, seed, index, name, split, cfg = task
    s = render(seed, index, cfg)
    write_sample(
        out, name, split, s.image, dict(zip(HEADS, s.masks, strict=True)),
        dict(zip(HEADS, s.labels, strict=True)), group="synthetic", append_label=False,
    )
    return name, split, s.labels
