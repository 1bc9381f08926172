"""Two-stage training of the ResSE network (paper §3, SPEC §2), read top to bottom.

Stage 1 (`epochs_seg`, 200): segmentation stage only, pixel-wise BCE after the sigmoid (eq. 4) —
or the ablations sigmoid+MSE / linear+MSE —, heads whose mask is unknown left out per sample.
Stage 2 (`epochs_cls`, 80): the segmentation stage is frozen (no grad, BatchNorm in eval mode) and
the classification stage trains with BCE on the two scores (eq. 5), unknown labels left out.
Batch 16, Adam with default parameters, a fresh Adam for each stage. Crop augmentation δ ∈ [0.75, 1]
(`linewatch.model.data.augment`).

Fast path: the dataset is decoded once into a uint8 tensor cache that lives on the device; batches
are gathered, augmented and normalised there; channels_last; bf16 (or fp16 + GradScaler) autocast
on CUDA; losses are accumulated on the device and read once per epoch (no per-step host sync).

Outputs in RUN/: `last.pt` (every epoch: model, optimizer, epoch, stage, RNG, best so far, training seconds
so far — `elapsed_s` and `wall_s` count every sitting of a resumed run),
`best.pt` (lowest validation loss of the current stage; at the switch to stage 2 the best stage-1
weights are restored first), `log.jsonl` (one JSON line per epoch), `metrics.json` (validation
metrics of best.pt at 0.7 and at its recommended thresholds). Training ends by choosing, on the
validation part only, the recommended threshold per head (`linewatch.calibrate.recommend`: the best
balanced accuracy) and stores it with the validation TPR/TNR it gives as `best.pt["operating_point"]`;
`linewatch export` writes it into the manifest, where the daemon takes its default thresholds from. Checkpoints hold only tensors and plain Python values:
`torch.load(path, weights_only=True)` reads them. `train(tc, resume=True)` continues from `last.pt`.

A wrong setting raises `SettingError` naming the `TrainConfig` field (or `resume`) in backquotes.
"""

from __future__ import annotations

import io
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from linewatch import atomicfile, jsonfile
from linewatch.errors import SettingError
from linewatch.model.data import TensorCache, augment, build_cache, cropped_labels, holdout, strat_key
from linewatch.model.resse import NetworkConfig, ResSENet

SEG_LOSSES = ("bce", "mse-sigmoid", "mse-linear")
DIST_CAP = 8
"""Erosions counted by the distance weighting (`inner_distance`): defect cells deeper than this weigh as deep."""
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"dilate": 0, "seg_distance_p": 0.0, "balance": False, "joint_epochs": 0, "pos_weight": (1.0, 1.0)},
}
"""Named recipes: `--recipe paper` turns every recipe option to the paper's (§3: eq. 4 and 5, frozen
segmentation in stage 2, uniform sampling), whatever the defaults become; the paper's batch 16, Adam
lr 1e-3, crop Δ 0.75 and sigmoid + CE are the defaults of their own options."""


@dataclass
class TrainConfig:
    data: str = ""
    out: str = "runs/resse"
    epochs_seg: int = 200
    epochs_cls: int = 80
    batch: int = 16
    lr: float = 1e-3
    seg_loss: str = "bce"
    crop: bool = True
    delta_min: float = 0.75
    device: str = "auto"
    amp: str = "auto"
    """auto (bf16 on CUDA when supported, else fp16; off on CPU) | bf16 (CUDA, or CPUs with native bf16) |
    fp16 (CUDA only) | off."""
    init: str = ""
    """Weights to start from (a `RUN/best.pt`/`last.pt` or an exported `<stem>.pt`): fine-tuning."""
    seed: int = 0
    workers: int = 4
    val_split: float = 0.1
    """Share of the train split held out for validation when the dataset has no `val` split."""
    limit_steps: int = 0
    """Cap on steps per epoch (0 = one pass over the training set); for tests and smoke runs."""
    stop_after_epochs: int = 0
    """Stop this invocation after that many epochs (0 = never); `train(..., resume=True)` continues."""
    eval_every: int = 1
    pos_weight: tuple[float, float] | str = (1.0, 1.0)
    """Stage 2: weight of a positive label's loss term per head (anomaly, adhesive); (1, 1) is eq. 5.
    Above 1 for a head whose misses cost more than its false alarms (a defect that passes the gate);
    it moves that head's scores up, so the fixed threshold catches more positives (docs/model.md §2).
    "auto": per head, negatives / positives among the training part's labels (a balanced eq. 5)."""
    # -- recipe options (docs/model.md "Recipe options"); each off = the paper's recipe (`RECIPES["paper"]`)
    dilate: int = 0
    """Mask dilation for rough annotations: every mask is dilated by a square of this many pixels of the
    model input (odd; 0 = none), scaled to the image's own size before the mask is reduced."""
    seg_distance_p: float = 0.0
    """Distance-weighted segmentation loss: a defect pixel's term is weighted by (d / d_max)^p, d its
    distance to the nearest background cell of the 1/8 target (Chebyshev, capped at DIST_CAP), d_max the
    largest in that mask; background terms keep weight 1. 0 = eq. 4 as it is."""
    balance: bool = False
    """Balanced sampling: each epoch draws defective and defect-free images (any head labelled 1 vs
    not) with equal probability, with replacement, as many as one pass over the training part."""
    joint_epochs: int = 0
    """The classification loss reaches the segmentation stage late: the last N of the `epochs_cls` epochs
    train both stages (loss = eq. 5 + eq. 4, BatchNorm in train mode, a fresh Adam), starting from the
    best stage-2 weights. 0 = the paper's frozen segmentation stage throughout stage 2."""
    quiet: bool = False
    model: dict[str, Any] = field(default_factory=dict)
    """NetworkConfig as a dict."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ------------------------------------------------------------------------------------ losses


def inner_distance(target: torch.Tensor, cap: int = DIST_CAP) -> torch.Tensor:
    """Per foreground cell of a {0,1} target [B, C, h, w]: its Chebyshev distance to the nearest background
    cell (1 on a defect's edge), counted by up to `cap` 3×3 erosions (deeper cells read `cap`); 0 on
    background. Outside the image counts as neither (a defect at the border is not an edge there)."""
    d = torch.zeros_like(target)
    cur = target
    for _ in range(cap):  # fixed count: no host sync
        d = d + cur
        cur = -F.max_pool2d(-cur, 3, stride=1, padding=1)
    return d


def distance_weights(target: torch.Tensor, p: float) -> torch.Tensor:
    """The distance weighting of `TrainConfig.seg_distance_p`: (d / d_max)^p on defect cells, 1 on background."""
    d = inner_distance(target)
    d_max = d.flatten(2).amax(2).clamp_min(1.0)[:, :, None, None]
    return torch.where(target > 0, (d / d_max) ** p, torch.ones_like(target))


def seg_loss(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor, kind: str,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4 (or its MSE ablations): mean over pixels, then over the (sample, head) pairs that are known.
    `weight` [B, 2, h, w] multiplies each pixel's term (`distance_weights`); None = eq. 4."""
    logits = logits.float()
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # = CE after sigmoid
    elif kind == "mse-sigmoid":
        per_pixel = (torch.sigmoid(logits) - target) ** 2
    elif kind == "mse-linear":
        per_pixel = (logits - target) ** 2
    else:
        raise SettingError(f"`seg_loss` {kind!r} is invalid; allowed: {', '.join(SEG_LOSSES)}")
    if weight is not None:
        per_pixel = per_pixel * weight
    per_head = per_pixel.mean(dim=(2, 3))  # [B, 2]
    w = known.float()
    return (per_head * w).sum() / w.sum().clamp_min(1.0)


def cls_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5: BCE over the (sample, head) pairs whose label is known (labels NaN = unknown).

    `pos_weight` [2] multiplies the positive labels' terms per head (None or ones: eq. 5 itself)."""
    known = ~torch.isnan(labels)
    y = torch.nan_to_num(labels, nan=0.0)
    per = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none", pos_weight=pos_weight)
    w = known.float()
    return (per * w).sum() / w.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------ helpers


def check_pos_weight(values: Any) -> tuple[float, float] | str:
    """The stage-2 positive weights as a pair of finite floats > 0 (one per head), or "auto"; else a SettingError."""
    if values == "auto":
        return "auto"
    try:
        pair = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        raise SettingError(f"`pos_weight` {values!r} is invalid; expected two numbers > 0 (anomaly,adhesive), "
                           "e.g. 3,1 (1,1 = eq. 5), or auto")
    anomaly, adhesive = pair
    return anomaly, adhesive


def auto_pos_weight(labels: torch.Tensor) -> tuple[float, float]:
    """`pos_weight` "auto": per head, labelled negatives / labelled positives (1 where a class is missing)."""
    out = []
    for c in range(2):
        y = labels[:, c]
        pos, neg = int((y == 1).sum()), int((y == 0).sum())
        out.append(neg / pos if pos and neg else 1.0)
    return out[0], out[1]


def check_recipe(tc: TrainConfig) -> None:
    """SettingError naming the recipe option whose value is out of range."""
    if tc.dilate < 0 or (tc.dilate and tc.dilate % 2 == 0):
        raise SettingError(f"`dilate` {tc.dilate} is invalid; allowed: 0 (none) or an odd number of pixels, e.g. 7")
    if not (math.isfinite(tc.seg_distance_p) and tc.seg_distance_p >= 0):
        raise SettingError(f"`seg_distance_p` {tc.seg_distance_p} is invalid; allowed: 0 (off) or a number > 0, e.g. 2")
    if not 0 <= tc.joint_epochs <= tc.epochs_cls:
        raise SettingError(f"`joint_epochs` {tc.joint_epochs} is invalid; allowed: 0 to `epochs_cls` ({tc.epochs_cls})")


def balanced_indices(defective: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """`n` indices drawn with replacement, defective (True) and defect-free images equally likely; a
    plain permutation when either class is missing."""
    n_pos = int(defective.sum())
    if n_pos == 0 or n_pos == defective.numel():
        return torch.randperm(n, generator=gen, device=defective.device)
    w = torch.where(defective, 0.5 / n_pos, 0.5 / (defective.numel() - n_pos)).float()
    return torch.multinomial(w, n, replacement=True, generator=gen)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError(f"`device` {name}: CUDA is not available here (torch {torch.__version__})")
    if name != "cpu" and not name.startswith("cuda"):
        raise SettingError(f"`device` {name!r} is invalid; allowed: auto, cpu, cuda, cuda:N")
    return torch.device(name)


AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def cpu_bf16_supported() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 on CPU is emulated and slow."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: CUDA `auto` = bf16 where supported, else fp16; CPU `auto` = off (FP32, the
    reference), CPU `bf16` = bf16 autocast (about 2x faster on CPUs with native bf16); fp16 is CUDA only."""
    if amp not in AMP_CHOICES:
        raise SettingError(f"`amp` {amp!r} is invalid; allowed: {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp == "fp16":
            raise SettingError(f"`amp` fp16 needs CUDA (device {device}); allowed on CPU: auto, bf16, off")
        if amp == "bf16" and not cpu_bf16_supported():
            raise SettingError("`amp` bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); allowed here: auto, off")
        return torch.bfloat16 if amp == "bf16" else None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def load_init(path: str) -> dict[str, Any]:
    """The checkpoint `init` names (weights_only): must hold `model` (a state dict) and `config`."""
    p = Path(path)
    if not p.is_file():
        raise SettingError(f"`init` {path}: no such file")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a usage error naming it
        raise SettingError(f"`init` {path}: not a readable checkpoint ({e.__class__.__name__}: {e})") from None
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck:
        raise SettingError(f"`init` {path}: expected a linewatch checkpoint with 'model' and 'config' "
                           "(RUN/best.pt, RUN/last.pt or engines/<name>.pt)")
    return ck


def set_stage(model: ResSENet, stage: int) -> list[torch.nn.Parameter]:
    """Train mode for the trained part; stage 2 freezes the segmentation stage, stage 3 (`joint_epochs`)
    trains both. Returns the trained params."""
    model.train()
    seg_trainable = stage in (1, 3)
    for p in model.segmentation.parameters():
        p.requires_grad_(seg_trainable)
    for p in model.classification.parameters():
        p.requires_grad_(stage >= 2)
    if stage == 2:
        model.segmentation.eval()
        return list(model.classification.parameters())
    if stage == 3:
        return list(model.parameters())
    return list(model.segmentation.parameters())


class TrainingProgress:
    """A one-line progress bar on a TTY (stderr); silent otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.t0 = total, time.time()
        self.enabled = enabled and sys.stderr.isatty()

    def update(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        frac = done / max(1, self.total)
        el = time.time() - self.t0
        eta = el / max(frac, 1e-9) - el
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        sys.stderr.write(f"\r[{bar}] {done}/{self.total} {text} eta {eta:5.0f}s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def resolve_splits(data: str, val_split: float, seed: int) -> tuple[Any, list[Any], list[Any]]:
    """(dataset, train samples, val samples): the `val` split if it has one, else a stratified hold-out."""
    from linewatch.data.dataset import open_dataset

    ds = open_dataset(data)
    train = ds.split("train")
    val = ds.split("val")
    if not train:
        raise SettingError(f"{data}: no samples in split 'train'")
    if not val and val_split > 0:
        tr, va = holdout([strat_key(s) for s in train], val_split, seed)
        train, val = [train[i] for i in tr], [train[i] for i in va]
    return ds, train, val


@torch.no_grad()
def predict(
    model: ResSENet, cache: TensorCache, batch: int, dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seg logits, masks-target, cls logits) over a cache without augmentation, eval mode, float32.
    Input in channels_last, as the training loop keeps the model."""
    was = model.training
    model.eval()
    seg, tgt, cls = [], [], []
    dev = cache.images.device
    for i in range(0, len(cache), batch):
        x, t = augment(cache.images[i : i + batch], cache.masks[i : i + batch], None, crop=False,
                       channels_last=True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
        seg.append(out.seg_logits.float())
        tgt.append(t)
        cls.append(out.cls_logits.float())
    model.train(was)
    return torch.cat(seg), torch.cat(tgt), torch.cat(cls)


def host_name(device: torch.device) -> str:
    """What trained: the GPU's name, or the CPU's model name and core count (a run's wall time means little
    without it; a resumed run names the machine that finished it)."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} CPUs)"


def rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"generator": gen.get_state(), "torch": torch.get_rng_state()}


# ------------------------------------------------------------------------------------ training


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save into memory, then `atomicfile.write_bytes` over `path`: a run killed mid-write leaves the
    previous checkpoint intact, so a resumed run always finds a whole one."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomicfile.write_bytes(path, buf.getbuffer())


RUN_SETTINGS = ("epochs_seg", "epochs_cls", "batch", "lr", "seg_loss", "crop", "delta_min", "init", "seed",
                "val_split", "limit_steps", "eval_every", "pos_weight", "dilate", "seg_distance_p", "balance",
                "joint_epochs")
"""The TrainConfig fields that make a run what it is (with `model`, the network); a resumed run keeps its own."""

PER_SITTING = tuple(f.name for f in fields(TrainConfig) if f.name not in RUN_SETTINGS and f.name != "model")
"""Every other TrainConfig field: where and how this sitting runs (data folder's path, out, device, amp, workers,
stop_after_epochs, quiet), taken from the caller — a run begun on a CPU may finish on a GPU. `amp` only where the
caller names it in `asked` (`--amp` typed; `linewatch ablate` always): else a resume keeps the run's precision."""


def _plain(v: Any) -> Any:
    """A setting as a checkpoint stores it (tuples read back as lists)."""
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def resume_clashes(run: dict[str, Any], tc: TrainConfig, asked: Any) -> list[str]:
    """The settings in `asked` (TrainConfig fields; network keys as `model.<key>`) whose value in `tc`
    differs from the run's own (`run`, the checkpoint's "train"), each as "`name` given (the run's value)"."""
    out = []
    for name in asked:
        if name in PER_SITTING:
            continue
        if name.startswith("model."):  # a setting an older checkpoint lacks is its default (from_dict fills it in)
            from linewatch.model.resse import NetworkConfig

            key = name.split(".", 1)[1]
            given, theirs = tc.model.get(key), run.get("model", {}).get(key, NetworkConfig().to_dict().get(key))
        else:
            given, theirs = getattr(tc, name), run.get(name, getattr(TrainConfig(), name))
        given, theirs = _plain(given), _plain(theirs)
        if given != theirs:
            out.append(f"`{key if name.startswith('model.') else name}` {given!r} (the run's {theirs!r})")
    return out


def train(tc: TrainConfig, resume: bool = False, splits: tuple[Any, list[Any], list[Any]] | None = None,
          asked: Any = ()) -> dict[str, Any]:
    """Run (or resume) a two-stage training; returns a summary dict (also the last log line).

    `splits` = (dataset, train samples, val samples) overrides the dataset's own split (k-fold ablations).
    `asked`: the settings the caller set on purpose (TrainConfig fields, network keys as `model.<key>`);
    a resumed run keeps its own settings (but `PER_SITTING`'s), so one of them that differs from the
    run's raises SettingError naming it, instead of being silently ignored.
    """
    out = Path(tc.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_last, ckpt_best = out / "last.pt", out / "best.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        if not ckpt_last.is_file():
            raise SettingError(f"`resume`: {ckpt_last} does not exist (nothing to resume)")
        ckpt = torch.load(ckpt_last, map_location="cpu", weights_only=True)
        clashes = resume_clashes(ckpt["train"], tc, asked)
        if clashes:
            raise SettingError(f"`resume` continues {ckpt_last} with its own settings, and these differ from "
                               f"them: {', '.join(clashes)}; leave them out, or train into a new `out`")
        if ckpt.get("best_saved", math.isfinite(float(ckpt["best_val"]))) and not ckpt_best.is_file():
            # the best weights so far live only there: stage 2 starts from them and the end scores them
            raise SettingError(f"`resume`: {ckpt_best} is missing beside {ckpt_last} (its best weights so far, "
                               f"validation loss {float(ckpt['best_val']):.6g}); copy it back with last.pt")
        # the sitting's own, but the precision only where asked for: a resume that does not name it keeps the run's
        keep = {k: getattr(tc, k) for k in PER_SITTING if k != "amp" or "amp" in asked}
        keep["data"] = tc.data or ckpt["train"]["data"]
        tc = TrainConfig.from_dict({**ckpt["train"], **keep})
    elif ckpt_last.is_file():
        raise SettingError(f"{out} already holds a run ({ckpt_last}); use `resume` to continue it, or a new `out`")
    if tc.seg_loss not in SEG_LOSSES:
        raise SettingError(f"`seg_loss` {tc.seg_loss!r} is invalid; allowed: {', '.join(SEG_LOSSES)}")
    if tc.batch < 1:
        raise SettingError(f"`batch` {tc.batch} is invalid; allowed: 1 or more")
    for name in ("epochs_seg", "epochs_cls"):
        if getattr(tc, name) < 0:
            raise SettingError(f"`{name}` {getattr(tc, name)} is invalid; allowed: 0 or more")
    tc.pos_weight = check_pos_weight(tc.pos_weight)
    check_recipe(tc)
    init = load_init(tc.init) if tc.init and ckpt is None else None
    if tc.model:
        cfg = NetworkConfig.from_dict(tc.model)
    else:
        cfg = NetworkConfig.from_dict(init["config"]) if init is not None else NetworkConfig()
    want_act = "linear" if tc.seg_loss == "mse-linear" else "sigmoid"
    if cfg.seg_activation != want_act:
        cfg = NetworkConfig.from_dict({**cfg.to_dict(), "seg_activation": want_act})
    tc.model = cfg.to_dict()

    device = pick_device(tc.device)
    dtype = amp_dtype(tc.amp, device)
    torch.manual_seed(tc.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    gen = torch.Generator(device=device)
    gen.manual_seed(tc.seed)

    # data: decode once, keep on the device
    t0 = time.time()
    ds, train_s, val_s = splits if splits is not None else resolve_splits(tc.data, tc.val_split, tc.seed)
    hw = (cfg.input_height, cfg.input_width)
    train_c = build_cache(ds, train_s, hw, tc.workers, dilate=tc.dilate).to(device)
    val_c = build_cache(ds, val_s, hw, tc.workers, dilate=tc.dilate).to(device) if val_s else None
    log = print if not tc.quiet else (lambda *a, **k: None)
    log(f"data {tc.data}: {len(train_c)} train, {len(val_c) if val_c else 0} val, input {hw[0]}x{hw[1]}, "
        f"decoded in {time.time() - t0:.1f}s; device {device}, amp {dtype}")
    pw = auto_pos_weight(train_c.labels) if tc.pos_weight == "auto" else tc.pos_weight
    pos_weight = torch.tensor(pw, device=device)
    if tc.pos_weight == "auto":
        log(f"pos_weight auto: {pw[0]:.3f}, {pw[1]:.3f} (negatives / positives per head)")
    defective = (train_c.labels == 1).any(dim=1)

    model = ResSENet(cfg).to(device)
    if init is not None:
        try:
            model.load_state_dict(init["model"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise SettingError(f"`init` {tc.init}: its weights do not fit the model configured here "
                               f"({first[1].strip() if len(first) > 1 else first[0]}); leave the model settings "
                               "out to take the checkpoint's own") from None
        log(f"weights from {tc.init} (fine-tuning)")
    # NHWC: faster on CUDA and on CPU (oneDNN), needed for bf16 (torch's stubs lack the memory_format overload)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    n_epochs = tc.epochs_seg + tc.epochs_cls
    fused = device.type == "cuda"  # one kernel per step for all params; same maths as Adam defaults
    start_epoch, best_val, stage = 0, math.inf, 1 if tc.epochs_seg > 0 else 2
    best_saved = False  # has best.pt been written in this run (a resume needs it then)
    spent = 0.0  # training seconds of the earlier sittings of this run (a resumed run counts them too)
    params = set_stage(model, stage)
    opt = torch.optim.Adam(params, lr=tc.lr, fused=fused)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        start_epoch, best_val, stage = int(ckpt["epoch"]) + 1, float(ckpt["best_val"]), int(ckpt["stage"])
        spent = float(ckpt.get("elapsed_s", 0.0))  # checkpoints before 2026-12-03 lack it
        best_saved = bool(ckpt.get("best_saved", math.isfinite(best_val))) or ckpt_best.is_file()  # (older: no flag)
        params = set_stage(model, stage)  # the loop switches stage (restoring best.pt) if it is due
        opt = torch.optim.Adam(params, lr=tc.lr, fused=fused)
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"]["generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        log(f"resumed from {ckpt_last} at epoch {start_epoch} (stage {stage})")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    n = len(train_c)
    bs = min(tc.batch, n)
    steps = max(1, n // bs)
    if tc.limit_steps:
        steps = min(steps, tc.limit_steps)
    progress = TrainingProgress(n_epochs, not tc.quiet)
    logf = open(out / "log.jsonl", "a")  # noqa: SIM115 - closed in finally
    t_start = time.time() - spent
    summary: dict[str, Any] = {}
    ran = 0
    try:
        for epoch in range(start_epoch, n_epochs):
            new_stage = 1 if epoch < tc.epochs_seg else 3 if epoch >= n_epochs - tc.joint_epochs else 2
            if new_stage != stage:  # next stage: restore the best weights so far, (un)freeze, fresh Adam
                if ckpt_best.is_file():
                    best = torch.load(ckpt_best, map_location="cpu", weights_only=True)
                    model.load_state_dict(best["model"])
                # stage 1 -> 2 changes the loss (eq. 4 -> eq. 5): best so far starts again; 2 -> 3 keeps
                # eq. 5 as the measure, so the joint epochs must beat the best frozen one to replace it
                if stage == 1:
                    best_val = math.inf
                stage = new_stage
                params = set_stage(model, stage)
                opt = torch.optim.Adam(params, lr=tc.lr, fused=fused)
            set_stage(model, stage)
            t_ep = time.time()
            loss_sum = torch.zeros((), device=device)
            perm = balanced_indices(defective, n, gen) if tc.balance else torch.randperm(n, generator=gen, device=device)
            for step in range(steps):
                idx = perm[step * bs : (step + 1) * bs]
                x, target = augment(train_c.images[idx], train_c.masks[idx], gen, crop=tc.crop,
                                    delta_min=tc.delta_min, channels_last=True)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    weight = distance_weights(target, tc.seg_distance_p) if tc.seg_distance_p else None
                    if stage == 1:
                        _, logits = model.segmentation(x)
                        loss = seg_loss(logits, target, train_c.mask_known[idx], tc.seg_loss, weight)
                    else:
                        with torch.set_grad_enabled(stage == 3):  # stage 2: the segmentation stage is frozen
                            feats, seg_logits = model.segmentation(x)
                            masks = torch.sigmoid(seg_logits) if cfg.seg_activation == "sigmoid" else seg_logits
                        logits = model.classification(feats, masks)
                        labels = train_c.labels[idx]
                        if tc.crop:  # a crop that cut the defect off leaves no defective image
                            labels = cropped_labels(labels, train_c.masks[idx], target)
                        loss = cls_loss(logits, labels, pos_weight)
                        if stage == 3:  # the segmentation stage keeps its own supervision
                            loss = loss + seg_loss(seg_logits, target, train_c.mask_known[idx], tc.seg_loss, weight)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                loss_sum += loss.detach()
            train_loss = float(loss_sum) / steps  # the one host sync of the epoch

            val_loss = math.nan
            if val_c is not None and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == n_epochs):
                seg_l, tgt, cls_l = predict(model, val_c, max(bs, 32), dtype)
                val_loss = float(seg_loss(seg_l, tgt, val_c.mask_known, tc.seg_loss) if stage == 1
                                 else cls_loss(cls_l, val_c.labels, pos_weight))
            improved = not math.isnan(val_loss) and val_loss < best_val
            if improved:
                best_val = val_loss
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "stage": stage,
                "best_val": best_val,
                "rng": rng_state(gen),
                "config": cfg.to_dict(),
                "train": asdict(tc),
                "elapsed_s": time.time() - t_start,
                "best_saved": best_saved or improved or val_c is None,
            }
            if improved or val_c is None:  # best before last: a last.pt never names a best not yet on disk
                save_atomic(state, ckpt_best)
                best_saved = True
            save_atomic(state, ckpt_last)
            summary = {
                "epoch": epoch + 1, "epochs": n_epochs, "stage": stage, "train_loss": round(train_loss, 6),
                "val_loss": None if math.isnan(val_loss) else round(val_loss, 6), "best": improved,
                "epoch_s": round(time.time() - t_ep, 3), "elapsed_s": round(time.time() - t_start, 1),
            }
            logf.write(jsonfile.dumps(summary) + "\n")
            logf.flush()
            progress.update(epoch + 1, f"stage {stage} loss {train_loss:.4f}")
            if not tc.quiet and not progress.enabled:
                log(jsonfile.dumps(summary))
            ran += 1
            if tc.stop_after_epochs and ran >= tc.stop_after_epochs and epoch + 1 < n_epochs:
                log(f"stopping after {ran} epoch(s) as asked; resume the run to continue")
                return {**summary, "stopped": True}
    finally:
        progress.close()
        logf.close()

    # final validation metrics of best.pt and its recommended operating point (stored in it, and in metrics.json)
    if val_c is not None and ckpt_best.is_file():
        from linewatch.calibrate import recommend
        from linewatch.model.metrics import all_metrics

        best = torch.load(ckpt_best, map_location="cpu", weights_only=True)
        model.load_state_dict(best["model"])
        _, _, cls_l = predict(model, val_c, max(bs, 32), dtype)
        val_labels, val_scores = val_c.labels.cpu().numpy(), torch.sigmoid(cls_l).cpu().numpy()
        op = recommend(val_labels, val_scores)
        metrics = {"val": all_metrics(val_labels, val_scores),
                   "val_recommended": all_metrics(val_labels, val_scores, {h: op[h]["threshold"] for h in op})}
        best["metrics"] = jsonfile.clean(metrics)  # plain floats only
        best["operating_point"] = jsonfile.clean(op)
        best["training"] = {
            "data": str(tc.data), "n_train": len(train_c), "n_val": len(val_c), "epochs_seg": tc.epochs_seg,
            "epochs_cls": tc.epochs_cls, "batch": tc.batch, "lr": tc.lr, "seg_loss": tc.seg_loss,
            "pos_weight": list(pw), "recipe": {k: getattr(tc, k) for k in RECIPES["paper"] if k != "pos_weight"},
            "seed": tc.seed, "device": str(device), "amp": str(dtype), "init": tc.init or None,
            "wall_s": round(time.time() - t_start, 1), "host": host_name(device), "threads": torch.get_num_threads(),
        }
        save_atomic(best, ckpt_best)
        (out / "metrics.json").write_text(jsonfile.dumps({**metrics, "operating_point": op}, indent=2) + "\n")
        summary["val_metrics"] = metrics["val"]
        summary["operating_point"] = op
    return summary
