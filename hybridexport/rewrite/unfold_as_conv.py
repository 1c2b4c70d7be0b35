"""``unfold-as-conv``: MobileViT's unfold/fold reshape-transpose chains as identity-kernel convolutions.

Unfolding a (B, C, H, W) map into 2×2 patches is a fixed selection: a grouped convolution whose
(C·P, 1, ph, pw) kernel holds one 1 per output channel, with stride = patch, produces (B, C·P, nh, nw)
with channel ``c·P + p`` = pixel ``p`` of every patch; the transposed convolution with the same kernel
puts every value back. Both are exact (each output reads exactly one input) and are single conv ops in
every exporter (``pixel_shuffle`` would be decomposed into rank-6 reshapes by core-ATen lowering).
This is the Core ML-friendly path of apple/ml-cvnets MobileViTv2 (conv unfold, pixel-shuffle fold).
"""

from __future__ import annotations

import math
from collections import Counter

import hybridexport._tvshim  # noqa: F401  (before anything imports timm/torchvision)

import torch
import torch.nn.functional as F
from torch import nn

from hybridexport.rewrite._graph import set_submodule
from hybridexport.rewrite.base import PassOutcome, RewritePass, count_phrase, register_pass


def identity_patch_kernel(channels: int, ph: int, pw: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(C·P, 1, ph, pw) kernel: output channel ``c·P + i·pw + j`` picks pixel (i, j) of channel c."""
    p = ph * pw
    w = torch.zeros(channels * p, 1, ph, pw, dtype=dtype)
    for i in range(ph):
        for j in range(pw):
            w[i * pw + j::p, 0, i, j] = 1.0
    return w


class PatchUnfold(nn.Module):
    """(B, C, H, W) → (B, C·P, H/ph, W/pw) by an identity-kernel grouped conv (channel ``c·P + p``)."""

    def __init__(self, channels: int, patch: tuple[int, int]) -> None:
        super().__init__()
        self.channels, self.patch = channels, patch
        self.register_buffer("weight", identity_patch_kernel(channels, *patch), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), stride=self.patch, groups=self.channels)


class PatchFold(PatchUnfold):
    """Inverse of :class:`PatchUnfold`: (B, C·P, nh, nw) → (B, C, nh·ph, nw·pw).

    Square patches use ``pixel_shuffle`` (ONNX DepthToSpace CRD, Core ML ``pixel_shuffle``; a grouped
    transposed conv would be split per group by the TFLite converter); other patches the transposed
    identity conv.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch
        if ph == pw:
            return F.pixel_shuffle(x, ph)
        return F.conv_transpose2d(x, self.weight.to(x.dtype), stride=self.patch, groups=self.channels)


def _padded_size(h: int, w: int, ph: int, pw: int) -> tuple[int, int]:
    return math.ceil(h / ph) * ph, math.ceil(w / pw) * pw


class ConvUnfoldMobileVitBlock(nn.Module):
    """timm ``MobileVitBlock`` with conv unfold/fold. Same submodules and weights, same outputs.

    The transformer still sees (B·P, N, C) sequences — attention per pixel position within the patch —
    but they are made by one identity conv, a rank-3 reshape and one (1, 2) transpose instead of
    three reshapes and two rank-4 transposes; fold is the mirror image.
    """

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.conv_kxk, self.conv_1x1 = src.conv_kxk, src.conv_1x1
        self.transformer, self.norm = src.transformer, src.norm
        self.conv_proj, self.conv_fusion = src.conv_proj, src.conv_fusion
        self.patch_size, self.patch_area = tuple(src.patch_size), src.patch_area
        dim = src.conv_1x1.out_channels
        self.unfold = PatchUnfold(dim, self.patch_size)
        self.fold = PatchFold(dim, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        b, c, h, w = x.shape
        ph, pw = self.patch_size
        new_h, new_w = _padded_size(h, w, ph, pw)
        resized = (new_h, new_w) != (h, w)
        if resized:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        nh, nw = new_h // ph, new_w // pw
        p, n = self.patch_area, nh * nw
        x = self.unfold(x).reshape(b, c, p * n).transpose(1, 2).reshape(b * p, n, c)
        x = self.norm(self.transformer(x))
        x = self.fold(x.reshape(b, p * n, c).transpose(1, 2).reshape(b, c * p, nh, nw))
        if resized:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = self.conv_proj(x)
        if self.conv_fusion is not None:
            x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x


class ConvUnfoldMobileVitV2Block(nn.Module):
    """timm ``MobileVitV2Block`` with conv unfold/fold: (B, C, H, W) ↔ (B, C, P, N) by one conv and one
    rank-4 reshape each way, instead of a rank-6 reshape + permute (or ``F.unfold`` + ``pixel_shuffle``)."""

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.conv_kxk, self.conv_1x1 = src.conv_kxk, src.conv_1x1
        self.transformer, self.norm, self.conv_proj = src.transformer, src.norm, src.conv_proj
        self.patch_size, self.patch_area = tuple(src.patch_size), src.patch_area
        dim = src.conv_1x1.out_channels
        self.unfold = PatchUnfold(dim, self.patch_size)
        self.fold = PatchFold(dim, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ph, pw = self.patch_size
        new_h, new_w = _padded_size(h, w, ph, pw)
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))
        c = x.shape[1]
        nh, nw = new_h // ph, new_w // pw
        x = self.unfold(x).reshape(b, c, self.patch_area, nh * nw)
        x = self.norm(self.transformer(x))
        x = self.fold(x.reshape(b, c * self.patch_area, nh, nw))
        return self.conv_proj(x)


_NONE = "no MobileViT block (timm MobileVitBlock / MobileVitV2Block)"


def _block_classes() -> list[tuple[type[nn.Module], type[nn.Module]]]:
    try:
        from timm.models.mobilevit import MobileVitBlock, MobileVitV2Block
    except ImportError:  # pragma: no cover - timm is a dependency
        return []
    return [(MobileVitBlock, ConvUnfoldMobileVitBlock), (MobileVitV2Block, ConvUnfoldMobileVitV2Block)]


@register_pass
class UnfoldAsConv(RewritePass):
    """Replace MobileViT unfold/fold reshape-transpose chains by identity-kernel (transposed) convs.

    Before (timm ``MobileVitBlock``)::

        (B,C,H,W) ─ reshape (B·C·nh, ph, nw, pw) ─ transpose(1,2) ─ reshape (B,C,N,P) ─ transpose(1,3)
                  ─ reshape (B·P, N, C) ─ transformer ─ (the same five ops backwards)
    After::

        (B,C,H,W) ─ conv(identity, groups=C, stride=patch) ─ reshape (B,C,P·N) ─ transpose(1,2)
                  ─ reshape (B·P, N, C) ─ transformer ─ reshape ─ transpose(1,2) ─ reshape
                  ─ conv_transpose(identity, groups=C, stride=patch)

    ``MobileVitV2Block``: the rank-6 reshape + permute becomes the conv and one rank-4 reshape.
    """

    name = "unfold-as-conv"
    summary = "MobileViT unfold/fold as identity-kernel convs (no rank-5/6 reshapes, fewer transposes)"

    def precheck(self, model: nn.Module) -> str:
        classes = {src for src, _ in _block_classes()}
        if any(type(m) in classes for path, m in model.named_modules() if path):
            return ""
        return _NONE

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        classes = _block_classes()
        done: Counter[str] = Counter()
        for path, mod in list(model.named_modules()):
            for src_cls, new_cls in classes:
                if path and type(mod) is src_cls:
                    set_submodule(model, path, new_cls(mod))
                    done[src_cls.__name__] += 1
                    break
        if not done:
            return PassOutcome(0, notes=[_NONE])
        return PassOutcome(sum(done.values()), [count_phrase(done, "rewrote", "with conv unfold/fold")])
