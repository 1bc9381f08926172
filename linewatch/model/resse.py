"""The ResSE network of Song, Yuan & Liu (MVA 2019), SPEC §2.

Small composable blocks, one explicit `NetworkConfig`:

    ConvBNAct            conv k×k (+ BatchNorm) + ReLU                      Conv{b}_{l}
    ResSE                F_out = (1 + E) ⊙ F_in,  E = σ(k2 · ReLU(k1 · GAP(F_in)))   eq. 1–3, r = 8
    SegBlock             2× downsampling, then `depth` ConvBNAct, ResSE after the listed layers
    SegmentationStage    3 SegBlocks + Conv_S (1×1 → 2 channels) at 1/8 of the input
    ClassificationStage  Conv_C over concat(top features, seg maps) → global max + avg pooling of
                         the compressed features and of the seg maps → FC_class → 2 logits
    ResSENet             both stages; `forward(x float NCHW normalised) -> ResSEOutput`
    DeployNet            uint8 NHWC in, (masks, scores) out: what `linewatch export` writes to ONNX

Heads are in `linewatch.HEADS` order: channel/column 0 = anomaly, 1 = adhesive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from linewatch import HEADS
from linewatch.engines.base import NORM_SCALE, NORM_SHIFT
from linewatch.errors import SettingError

DEPTHS: dict[str, tuple[int, int, int]] = {
    "v1": (1, 1, 2),
    "v2": (2, 2, 3),
    "v3": (3, 3, 4),
    "v4": (4, 4, 5),
}
"""Conv layers per block (paper Table 1)."""

RESSE_PLACEMENTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "v1": ("2_1", "3_1"),
    "v2": ("1_2",),
    "v3": ("3_2", "3_3"),
}
"""Layers followed by a ResSE module (paper Table 3): "b_l" = Conv{b}_{l}."""

DOWNSAMPLES = ("max", "avg", "stride")
"""How a block halves the resolution: 2×2 max-pool, 2×2 average-pool, or its first conv at stride 2."""

SEG_ACTIVATIONS = ("sigmoid", "linear")
SE_REDUCTION = 8
"""Bottleneck reduction ratio r of the ResSE excitation (paper: 8)."""


@dataclass
class NetworkConfig:
    """Everything that defines a ResSENet. Saved in checkpoints and in the ONNX manifest."""

    depth: str = "v2"
    """Conv layers per block: v1 (1,1,2), v2 (2,2,3) — the paper's choice —, v3 (3,3,4), v4 (4,4,5)."""
    resse: str = "v1"
    """ResSE placement: none, v1 (after Conv2_1, Conv3_1), v2 (after Conv1_2), v3 (after Conv3_2, Conv3_3)."""
    widths: tuple[int, int, int] = (16, 32, 64)
    """Output channels of the conv layers of blocks 1, 2, 3."""
    kernels: tuple[int, int, int] = (3, 3, 3)
    """Conv kernel size of blocks 1, 2, 3 (odd)."""
    downsample: tuple[str, str, str] = ("stride", "max", "max")
    """How each block starts: "max" / "avg" (2×2 pooling) or "stride" (its first conv at stride 2)."""
    class_channels: int = 16
    """Output channels of the compression layer Conv_C."""
    class_kernel: int = 3
    """Kernel size of Conv_C."""
    batchnorm: bool = True
    """BatchNorm after every segmentation conv (folded into the conv at export)."""
    input_height: int = 512
    input_width: int = 1224
    seg_activation: str = "sigmoid"
    """Activation of Conv_S: "sigmoid" (the paper) or "linear" (the linear+MSE ablation)."""
    in_channels: int = 3
    heads: tuple[str, str] = field(default=HEADS)

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        self.kernels = tuple(int(k) for k in self.kernels)  # type: ignore[assignment]
        if isinstance(self.downsample, str):
            self.downsample = (self.downsample,) * 3  # type: ignore[assignment]
        self.downsample = tuple(self.downsample)  # type: ignore[assignment]
        self.heads = tuple(self.heads)  # type: ignore[assignment]
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(key: str, value: Any, allowed: str) -> SettingError:
            return SettingError(f"model config: {key}={value!r} is invalid; allowed: {allowed}")

        if self.depth not in DEPTHS:
            raise bad("depth", self.depth, ", ".join(DEPTHS))
        if self.resse not in RESSE_PLACEMENTS:
            raise bad("resse", self.resse, ", ".join(RESSE_PLACEMENTS))
        layers = self.layer_names()
        missing = [p for p in RESSE_PLACEMENTS[self.resse] if p not in layers]
        if missing:
            need = ", ".join(f"Conv{m}" for m in missing)
            raise SettingError(
                f"model config: resse={self.resse!r} places a ResSE module after {need}, which depth="
                f"{self.depth!r} {DEPTHS[self.depth]} does not have; use depth v2 or deeper"
            )
        if len(self.widths) != 3 or any(w < 1 for w in self.widths):
            raise bad("widths", self.widths, "three positive integers (c1, c2, c3)")
        if len(self.kernels) != 3 or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise bad("kernels", self.kernels, "three odd positive integers (k1, k2, k3)")
        if len(self.downsample) != 3 or any(d not in DOWNSAMPLES for d in self.downsample):
            raise bad("downsample", self.downsample, f"one or three of {', '.join(DOWNSAMPLES)}")
        if self.class_channels < 1:
            raise bad("class_channels", self.class_channels, "a positive integer")
        if self.class_kernel < 1 or self.class_kernel % 2 == 0:
            raise bad("class_kernel", self.class_kernel, "an odd positive integer")
        if self.seg_activation not in SEG_ACTIVATIONS:
            raise bad("seg_activation", self.seg_activation, ", ".join(SEG_ACTIVATIONS))
        for key in ("input_height", "input_width"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 8 or v % 8:
                raise bad(key, v, "a positive multiple of 8")
        if len(self.heads) != 2:
            raise bad("heads", self.heads, "two head names")

    def layer_names(self) -> list[str]:
        """["1_1", "1_2", "2_1", ...]: the conv layers this depth has."""
        return [f"{b + 1}_{i + 1}" for b, n in enumerate(DEPTHS[self.depth]) for i in range(n)]

    @property
    def output_hw(self) -> tuple[int, int]:
        return (self.input_height // 8, self.input_width // 8)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SettingError(f"model config: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------


class ConvBNAct(nn.Module):
    """k×k convolution ("same" padding), optional BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, batchnorm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not batchnorm)
        self.bn = nn.BatchNorm2d(cout) if batchnorm else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ResSE(nn.Module):
    """Residual Squeeze-and-Excitation (eq. 1–3): F_out = (1 + E) ⊙ F_in.

    S = global average pool of F_in (eq. 1); E = sigmoid(k2 · ReLU(k1 · S)) with k1: C → C/r,
    k2: C/r → C (eq. 2, written as 1×1 convolutions with bias); the residual form keeps the
    identity when E → 0 (eq. 3).
    """

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        self.hidden = max(1, channels // reduction)
        self.k1 = nn.Conv2d(channels, self.hidden, 1)
        self.k2 = nn.Conv2d(self.hidden, channels, 1)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)  # squeeze, eq. 1
        return torch.sigmoid(self.k2(F.relu(self.k1(s))))  # eq. 2, [N, C, 1, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 + self.excitation(x))  # eq. 3


class SegBlock(nn.Module):
    """One block of the segmentation stage: 2× downsampling, then `depth` convs (+ ResSE)."""

    def __init__(
        self,
        index: int,
        cin: int,
        cout: int,
        depth: int,
        kernel: int,
        downsample: str,
        resse_after: tuple[str, ...],
        batchnorm: bool,
    ) -> None:
        super().__init__()
        self.index = index
        if downsample == "max":
            self.down: nn.Module = nn.MaxPool2d(2)
        elif downsample == "avg":
            self.down = nn.AvgPool2d(2)
        else:
            self.down = nn.Identity()
        layers: list[nn.Module] = []
        c = cin
        for i in range(depth):
            stride = 2 if (i == 0 and downsample == "stride") else 1
            layers.append(ConvBNAct(c, cout, kernel, stride=stride, batchnorm=batchnorm))
            if f"{index}_{i + 1}" in resse_after:
                layers.append(ResSE(cout))
            c = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.down(x))


class SegmentationStage(nn.Module):
    """Three SegBlocks and Conv_S. Returns (top features [N,c3,H/8,W/8], seg logits [N,2,H/8,W/8])."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        placement = RESSE_PLACEMENTS[cfg.resse]
        blocks = []
        cin = cfg.in_channels
        for b in range(3):
            blocks.append(
                SegBlock(
                    b + 1,
                    cin,
                    cfg.widths[b],
                    DEPTHS[cfg.depth][b],
                    cfg.kernels[b],
                    cfg.downsample[b],
                    placement,
                    cfg.batchnorm,
                )
            )
            cin = cfg.widths[b]
        self.blocks = nn.Sequential(*blocks)
        self.conv_s = nn.Conv2d(cfg.widths[2], 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.blocks(x)
        return feats, self.conv_s(feats)


class ClassificationStage(nn.Module):
    """Racki et al. (2018) style decision head over the top features and the segmentation maps."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        c3 = cfg.widths[2]
        k = cfg.class_kernel
        self.conv_c = nn.Conv2d(c3 + 2, cfg.class_channels, k, padding=k // 2)
        self.fc_class = nn.Linear(2 * cfg.class_channels + 4, 2)

    def forward(self, feats: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        c = F.relu(self.conv_c(torch.cat([feats, seg], dim=1)))
        pooled = torch.cat(
            [
                c.amax(dim=(2, 3), keepdim=True),
                F.adaptive_avg_pool2d(c, 1),
                seg.amax(dim=(2, 3), keepdim=True),
                F.adaptive_avg_pool2d(seg, 1),
            ],
            dim=1,
        ).flatten(1)
        return self.fc_class(pooled)


class ResSEOutput(NamedTuple):
    seg_logits: torch.Tensor
    """Conv_S output before the activation, [N, 2, H/8, W/8]."""
    masks: torch.Tensor
    """Segmentation maps after the activation (sigmoid, or identity for "linear"), [N, 2, H/8, W/8]."""
    cls_logits: torch.Tensor
    """[N, 2]."""
    scores: torch.Tensor
    """sigmoid(cls_logits), [N, 2]: P(anomaly present), P(adhesive present)."""


class ResSENet(nn.Module):
    """The whole network. `forward(x)` takes float NCHW input normalised with `normalize`."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.segmentation = SegmentationStage(cfg)
        self.classification = ClassificationStage(cfg)

    def forward(self, x: torch.Tensor) -> ResSEOutput:
        if not torch.onnx.is_in_onnx_export() and (x.shape[-2] % 8 or x.shape[-1] % 8):
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by 8")
        feats, seg_logits = self.segmentation(x)
        masks = torch.sigmoid(seg_logits) if self.cfg.seg_activation == "sigmoid" else seg_logits
        cls_logits = self.classification(feats, masks)
        return ResSEOutput(seg_logits, masks, cls_logits, torch.sigmoid(cls_logits))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8-valued tensor (any float or integer dtype) -> the network's normalised float input
    (`linewatch.engines.base.NORM_SCALE`, `NORM_SHIFT`: what the exported graph does inside)."""
    return x.float() * NORM_SCALE + NORM_SHIFT


class DeployNet(nn.Module):
    """uint8 NHWC frames in, (masks, scores) out; cast, normalisation and layout change inside."""

    def __init__(self, net: ResSENet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(normalize(image.permute(0, 3, 1, 2)))
        return out.masks, out.scores


def build_model(cfg: NetworkConfig | None = None, **overrides: Any) -> ResSENet:
    """`build_model(depth="v3", resse="none")`: a ResSENet from a config and/or keyword overrides."""
    if cfg is None:
        cfg = NetworkConfig(**overrides)
    elif overrides:
        cfg = NetworkConfig.from_dict({**cfg.to_dict(), **overrides})
    return ResSENet(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_macs(model: ResSENet, height: int | None = None, width: int | None = None) -> int:
    """Multiply-accumulates of every Conv2d and Linear for one frame (hooks on a dummy forward)."""
    cfg = model.cfg
    h = height or cfg.input_height
    w = width or cfg.input_width
    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, cfg.in_channels, h, w))
        model.train(was_training)
    finally:
        for hd in handles:
            hd.remove()
    return total
