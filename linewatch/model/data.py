"""Training data for the ResSE network: an in-memory uint8 tensor cache and batched crop augmentation.

The dataset (`linewatch.data.dataset`) is decoded once into a `TensorCache`:

    images      uint8 [N, H, W, 3]        the model input (`linewatch.preprocess.to_model_input`: the line's rule)
    masks       uint8 [N, 2, H/4, W/4]    {0,1}; a cell is 1 when ANY pixel of the full-size mask under it is
    mask_known  bool  [N, 2]              pixel supervision known per head (mask file, or label 0)
    labels      float [N, 2]              1 / 0 / NaN (unknown)

The cache is moved to the training device once (about 1.9 MB per 512×1224 frame: 1000 frames fit in
any GPU). `augment` then works on whole batches on that device, without host round trips:

  * crop (paper §4.1): per sample δ ~ U[Δ, 1] (Δ = 0.75) and a random position; the patch of the
    image's shape scaled by δ is resampled back to the input size — one `affine_grid` + `grid_sample`
    (bilinear) for the images;
  * masks: the same affine grid samples the H/4 mask with *nearest* neighbours at H/4 × W/4 (δ ≤ 1
    means the grid step is ≤ one source cell, so no foreground cell is skipped), then a 2×2 max-pool
    gives the H/8 × W/8 target of Conv_S. Max (not area) reduction is deliberate: a scratch a few
    pixels wide must stay a positive cell of the 1/8 grid, or it vanishes from the loss. Without
    augmentation the target is exactly the 8×8 max-pool of the full-size mask.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from linewatch import HEADS
from linewatch.data.dataset import Dataset, Sample
from linewatch.model.resse import normalize

MASK_STRIDE = 4
"""The cache keeps masks at 1/4 of the input size (max-pooled), the target grid is 1/8."""
DELTA_MIN = 0.75
"""Δ of the paper's crop augmentation."""


def resize_mask_max(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """{0,1} HxW -> hw with "any" semantics: a target cell is 1 when any source pixel under it is 1."""
    import cv2

    h, w = hw
    if mask.shape == (h, w):
        return mask.astype(np.uint8)
    if not mask.any():
        return np.zeros((h, w), np.uint8)
    src = mask.astype(np.float32)
    if mask.shape[0] >= h and mask.shape[1] >= w:
        out = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)  # coverage fraction per cell
    else:  # enlarging (in one or both axes): nearest hits every source pixel
        out = cv2.resize(src, (w, h), interpolation=cv2.INTER_NEAREST)
        if mask.shape[0] > h or mask.shape[1] > w:  # mixed: shrink the other axis with area too
            out = np.maximum(out, cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA))
    return (out > 1e-6).astype(np.uint8)


@dataclass
class TensorCache:
    images: torch.Tensor
    masks: torch.Tensor
    mask_known: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    groups: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> TensorCache:
        return TensorCache(
            self.images.to(device),
            self.masks.to(device),
            self.mask_known.to(device),
            self.labels.to(device),
            self.names,
            self.groups,
        )

    def subset(self, idx: list[int]) -> TensorCache:
        t = torch.as_tensor(idx, dtype=torch.long, device=self.images.device)
        return TensorCache(
            self.images[t],
            self.masks[t],
            self.mask_known[t],
            self.labels[t],
            [self.names[i] for i in idx],
            [self.groups[i] for i in idx],
        )


def dilate_mask(mask: np.ndarray, pixels: int, input_hw: tuple[int, int]) -> np.ndarray:
    """{0,1} HxW dilated by a square of `pixels` pixels *of the model input* (odd), i.e. by the same
    share of the image in each axis: the kernel is scaled by the image's size over the input's."""
    import cv2

    if pixels <= 1 or not mask.any():
        return mask
    kh = max(1, int(round(pixels * mask.shape[0] / input_hw[0]))) | 1
    kw = max(1, int(round(pixels * mask.shape[1] / input_hw[1]))) | 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((kh, kw), np.uint8))


def build_cache(
    dataset: Dataset, samples: list[Sample], input_hw: tuple[int, int], workers: int = 4, dilate: int = 0
) -> TensorCache:
    """Decode `samples` once into a CPU TensorCache at `input_hw` (threads: cv2 releases the GIL).

    Images by `linewatch.preprocess.to_model_input` (the line's rule); masks by `resize_mask_max` over
    the same geometry (the whole image onto the input size, at 1/MASK_STRIDE), after `dilate_mask` by
    `dilate` input pixels (0 = as annotated)."""
    from linewatch.preprocess import to_model_input

    h, w = input_hw
    if h % 8 or w % 8:
        raise ValueError(f"input size {h}x{w} must be divisible by 8")
    n = len(samples)
    images = np.empty((n, h, w, 3), np.uint8)
    masks = np.zeros((n, 2, h // MASK_STRIDE, w // MASK_STRIDE), np.uint8)
    known = np.zeros((n, 2), bool)
    labels = np.full((n, 2), np.nan, np.float32)

    def load(i: int) -> None:
        s = samples[i]
        img = dataset.load_image(s)
        m, k = dataset.load_masks(s, img.shape[:2])
        to_model_input(img, dst=images[i])
        for c in range(2):
            if k[c]:
                masks[i, c] = resize_mask_max(dilate_mask(m[c], dilate, input_hw), (h // MASK_STRIDE, w // MASK_STRIDE))
        known[i] = k
        for c, head in enumerate(HEADS):
            label = s.labels[head]
            if label is not None:
                labels[i, c] = float(label)

    with ThreadPoolExecutor(max(1, workers)) as ex:
        list(ex.map(load, range(n)))
    return TensorCache(
        torch.from_numpy(images),
        torch.from_numpy(masks),
        torch.from_numpy(known),
        torch.from_numpy(labels),
        [s.name for s in samples],
        [s.group for s in samples],
    )


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator | None,
    *,
    crop: bool = True,
    delta_min: float = DELTA_MIN,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [B,H,W,3] + uint8 [B,2,H/4,W/4] -> (normalised float [B,3,H,W], target float [B,2,H/8,W/8]).

    With `crop`, each sample gets its own δ ∈ [delta_min, 1] and position (see the module doc).
    """
    b, h, w, _ = images.shape
    x = normalize(images.permute(0, 3, 1, 2))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    m = masks.float()
    if crop:
        dev = images.device
        r = torch.rand(b, 3, generator=generator, device=dev)
        delta = delta_min + (1.0 - delta_min) * r[:, 0]
        tx = (1.0 - delta) * (2.0 * r[:, 1] - 1.0)
        ty = (1.0 - delta) * (2.0 * r[:, 2] - 1.0)
        zero = torch.zeros_like(delta)
        theta = torch.stack([torch.stack([delta, zero, tx], 1), torch.stack([zero, delta, ty], 1)], 1)
        grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        mgrid = F.affine_grid(theta, [b, 2, m.shape[2], m.shape[3]], align_corners=False)
        m = F.grid_sample(m, mgrid, mode="nearest", padding_mode="border", align_corners=False)
    target = F.max_pool2d(m, 2)
    return x, target


def cropped_labels(labels: torch.Tensor, masks: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Image labels after the crop augmentation: a positive whose mask had foreground before the crop and
    has none after it (the crop cut the whole defect off) becomes unknown (NaN, left out of eq. 5) for
    that step — it is no longer a defective image, and calling it one teaches the classifier to fire on
    defect-free surface. Not 0 either: masks are rough annotations. Positives whose mask was empty to
    begin with (a label without a drawing) and heads without a mask keep their label.

    labels float [B,2] (1/0/NaN), masks uint8 [B,2,h,w] (cache, before the crop), target float [B,2,h',w'].
    """
    had = masks.flatten(2).amax(2) > 0
    has = target.flatten(2).amax(2) > 0
    lost = (labels == 1) & had & ~has
    return torch.where(lost, torch.full_like(labels, float("nan")), labels)


class CropDataset(torch.utils.data.Dataset):
    """Per-sample view of a TensorCache (for DataLoader users); the training loop batches on device."""

    def __init__(self, cache: TensorCache, crop: bool = True, seed: int = 0) -> None:
        self.cache = cache
        self.crop = crop
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c = self.cache
        x, t = augment(c.images[i : i + 1], c.masks[i : i + 1], self.generator, crop=self.crop)
        label = cropped_labels(c.labels[i : i + 1], c.masks[i : i + 1], t)[0] if self.crop else c.labels[i]
        return {"image": x[0], "target": t[0], "mask_known": c.mask_known[i], "label": label}


def stratified_folds(keys: list[str], k: int, seed: int) -> list[int]:
    """Fold index per item, balanced within each key (class): items of a key are shuffled with `seed`
    and dealt round-robin, continuing the deal across keys so fold sizes stay even."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    rng = np.random.default_rng(seed)
    folds = [0] * len(keys)
    offset = 0
    for key in sorted(set(keys)):
        idx = [i for i, kk in enumerate(keys) if kk == key]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[i] = (offset + j) % k
        offset += len(idx)
    return folds


def holdout(keys: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train idx, val idx): `fraction` of each key's items (at least one when the key has ≥ 2) held out."""
    rng = np.random.default_rng(seed)
    tr: list[int] = []
    va: list[int] = []
    for key in sorted(set(keys)):
        idx = [i for i, kk in enumerate(keys) if kk == key]
        rng.shuffle(idx)
        n_val = math.floor(fraction * len(idx) + 0.5)
        if fraction > 0 and n_val == 0 and len(idx) >= 2:
            n_val = 1
        va += idx[:n_val]
        tr += idx[n_val:]
    return sorted(tr), sorted(va)


def strat_key(s: Sample) -> str:
    """Stratification key of a sample: its group plus its labels."""
    return f"{s.group}|{s.labels.get('anomaly')}|{s.labels.get('adhesive')}"


def write_toy_dataset(
    out: str | Path, count: int, hw: tuple[int, int] = (64, 96), seed: int = 0,
    val: int = 0, test: int = 0, unknown_every: int = 0,
) -> Path:
    """A tiny, easy folder-format dataset for tests and smoke runs: grey noise, dark blobs (anomaly),
    bright horizontal bars (adhesive), each present in about half of the images. The last `test`
    samples are `test`, the `val` before them `val`. With `unknown_every` = k, every k-th sample has its
    adhesive label blank and no adhesive mask (unknown)."""
    from linewatch.data.write import write_sample

    out = Path(out)
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        img = np.clip(rng.normal(120, 10, (h, w)), 0, 255)
        anomaly, adhesive = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        has_a, has_h = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        if has_a:
            cy, cx, r = rng.uniform(4, h - 4), rng.uniform(4, w - 4), rng.uniform(2, 5)
            anomaly[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
            img[anomaly > 0] -= 70
        if has_h:
            y0 = int(rng.integers(0, h - 6))
            adhesive[y0 : y0 + 5, :] = 1
            img[adhesive > 0] += 80
        rgb = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        split = "test" if i >= count - test else "val" if i >= count - test - val else "train"
        unknown = unknown_every > 0 and i % unknown_every == unknown_every - 1
        masks = {"anomaly": anomaly, "adhesive": None if unknown else adhesive}
        labels = {"anomaly": int(has_a), "adhesive": None if unknown else int(has_h)}
        write_sample(out, f"toy{i:04d}", split, rgb, masks, labels, group="toy")
    return out
