"""Mobile-Former building blocks: dynamic ReLU, the three attention bridges, the conv blocks, the head.

An independent implementation of the computation in the author-released code (github AAboys/MobileFormer,
``dna_blocks.py``), checked against its outputs by ``tests/test_mobileformer.py``. Attribute names follow
the official ones (so official checkpoints load through a two-rule renaming table), except that each
attention module names its projections by role: ``q``/``k``/``v``/``proj``.

Layouts: feature maps are B×C×H×W; global tokens are **T×B×D** (token-major, as in the official code).
Attention runs on rank-4 B×heads×L×d tensors; no module uses data-dependent Python control flow.
"""

from __future__ import annotations

import torch
from torch import nn

Features = tuple[torch.Tensor, torch.Tensor]  # (feature map B×C×H×W, tokens T×B×D)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle ``(g, C/g) → (C/g, g)``, written with rank-4 tensors only."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b, self.groups, c // self.groups, h * w).transpose(1, 2)
        return x.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def shuffle_or_identity(groups: int, active: bool) -> nn.Module:
    """A ChannelShuffle when ``active`` (the grouped 26m), else an Identity holding the same index slot."""
    return ChannelShuffle(groups) if active else nn.Identity()


def conv_bn(inp: int, oup: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Bias-free conv followed by BatchNorm, as a list to splice into an ``nn.Sequential``."""
    return [nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(oup)]


class DyReLUCoefficients(nn.Module):
    """Dynamic-ReLU coefficients from one global token (official ``HyperFunc``).

    ``token[token_id]`` (B×D) → Linear(D, D/r) → ReLU → Linear(D/r, 2C) → h_sigmoid → B×2C×1×1.
    """

    def __init__(self, token_dim: int, channels: int, token_id: int, reduction: int) -> None:
        super().__init__()
        self.token_id = token_id
        squeeze = token_dim // reduction
        self.hyper = nn.Sequential(
            nn.Linear(token_dim, squeeze), nn.ReLU(), nn.Linear(squeeze, 2 * channels), nn.Hardsigmoid()
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hyper(tokens[self.token_id])[:, :, None, None]


class DynamicReLU(nn.Module):
    """Dynamic ReLU with two linear pieces per channel (official ``DyReLU``, num_func 2), no parameters.

    ``forward(x, coeffs)``: x B×C×H×W, coeffs B×2C×1×1 from ``DyReLUCoefficients``; returns
    ``max(a1·x, a2·x)`` with slopes ``a1 = 2(h1−½)+1 ∈ [0, 2]`` and ``a2 = 2(h2−½) ∈ [−1, 1]``.
    """

    def forward(self, x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        h1, h2 = coeffs.chunk(2, dim=1)
        return torch.maximum(x * ((h1 - 0.5) * 2.0 + 1.0), x * ((h2 - 0.5) * 2.0))


class Mobile2Former(nn.Module):
    """Mobile→Former cross attention (official ``Local2Global``): tokens attend to the feature map.

    Inputs: features B×C×H×W, tokens T×B×D; output: tokens T×B×D. Queries ``q(tokens)`` split into
    ``num_heads`` heads of C/heads channels; keys = values = the raw feature map (no local projection).
    The attended B×heads×T×d result is merged to T×B×C, scaled by ``2·h_sigmoid(alpha(tokens))``,
    projected back by ``proj`` (C→D), added to the tokens, then post-LayerNorm.
    """

    def __init__(self, channels: int, token_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (channels // num_heads) ** -0.5
        self.alpha = nn.Sequential(nn.Linear(token_dim, channels), nn.Hardsigmoid())
        self.q = nn.Linear(token_dim, channels)
        self.proj = nn.Linear(channels, token_dim)
        self.layer_norm = nn.LayerNorm(token_dim)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        t = tokens.shape[0]
        q = self.q(tokens).reshape(t, b, self.num_heads, c // self.num_heads).permute(1, 2, 0, 3)  # B×N×T×d
        kv = features.reshape(b, self.num_heads, c // self.num_heads, h * w)  # B×N×d×HW
        attn = ((q @ kv) * self.scale).softmax(dim=-1)  # B×N×T×HW
        out = (attn @ kv.transpose(-1, -2)).permute(2, 0, 1, 3).reshape(t, b, c)  # T×B×C
        out = out * (self.alpha(tokens) * 2.0)
        return self.layer_norm(tokens + self.proj(out))


class Former(nn.Module):
    """The former (official ``GlobalBlock``): token self-attention + FFN, both post-LayerNorm.

    Tokens T×B×D in and out. Queries ``q(tokens)`` in ``num_heads`` heads of D/heads; keys = values =
    the tokens themselves. Merged heads → ``proj`` (official ``channel_mlp``) → residual → LayerNorm →
    FFN (D→ratio·D→D, GELU) → residual → ``ffn_norm``.
    """

    def __init__(self, token_dim: int, num_heads: int, ffn_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (token_dim // num_heads) ** -0.5
        self.q = nn.Linear(token_dim, token_dim)
        self.proj = nn.Linear(token_dim, token_dim)
        self.layer_norm = nn.LayerNorm(token_dim)
        hidden = token_dim * ffn_ratio
        self.ffn = nn.Sequential(nn.Linear(token_dim, hidden), nn.GELU(), nn.Linear(hidden, token_dim))
        self.ffn_norm = nn.LayerNorm(token_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t, b, d = tokens.shape
        q = self.q(tokens).reshape(t, b, self.num_heads, d // self.num_heads).permute(1, 2, 0, 3)  # B×N×T×d
        kv = tokens.permute(1, 2, 0).reshape(b, self.num_heads, d // self.num_heads, t)  # B×N×d×T
        attn = ((q @ kv) * self.scale).softmax(dim=-1)  # B×N×T×T
        out = (attn @ kv.transpose(-1, -2)).permute(2, 0, 1, 3).reshape(t, b, d)
        tokens = self.layer_norm(tokens + self.proj(out))
        return self.ffn_norm(tokens + self.ffn(tokens))


class Former2Mobile(nn.Module):
    """Former→Mobile cross attention (official ``Global2Local``): the feature map attends to the tokens.

    Inputs: features B×C×H×W, tokens T×B×D; output: features + attended values, B×C×H×W. Queries =
    the raw feature map (no local projection) in ``num_heads`` heads of C/heads; keys ``k(tokens)``
    and values ``v(tokens)`` (official name of ``v``: ``proj``). No output projection.
    """

    def __init__(self, channels: int, token_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (channels // num_heads) ** -0.5
        self.k = nn.Linear(token_dim, channels)
        self.v = nn.Linear(token_dim, channels)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        t = tokens.shape[0]
        d = c // self.num_heads
        q = features.reshape(b, self.num_heads, d, h * w).transpose(-1, -2)  # B×N×HW×d
        k = self.k(tokens).permute(1, 2, 0).reshape(b, self.num_heads, d, t)  # B×N×d×T
        v = self.v(tokens).permute(1, 2, 0).reshape(b, self.num_heads, d, t)  # B×N×d×T
        attn = ((q @ k) * self.scale).softmax(dim=-1)  # B×N×HW×T
        out = (attn @ v.transpose(-1, -2)).transpose(-1, -2).reshape(b, c, h, w)
        return features + out


class Bridges(nn.Module):
    """Shared part of the two token-using blocks: Mobile→Former, Former and Former→Mobile modules."""

    def _init_bridges(self, inp: int, oup: int, token_dim: int, arch: dict) -> None:
        self.local_global = Mobile2Former(inp, token_dim, arch["bridge_heads"])
        self.global_block = Former(token_dim, arch["former_heads"], arch["former_ffn_ratio"])
        self.global_local = Former2Mobile(oup, token_dim, arch["bridge_heads"])

    def _coeffs(self, token_dim: int, channels: int, arch: dict) -> DyReLUCoefficients:
        return DyReLUCoefficients(token_dim, channels, arch["dyrelu_token"], arch["dyrelu_reduction"])


class LiteBlock(nn.Module):
    """The first block (official ``DnaBlock3`` with e2 = 0): dw3×3 (×e1) + BN + ReLU6 → pw + BN; no tokens."""

    def __init__(self, inp: int, oup: int, stride: int, e1: int, group_num: int) -> None:
        super().__init__()
        hidden = inp * e1
        self.identity = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            *conv_bn(inp, hidden, 3, stride, groups=inp),
            nn.ReLU6(),
            shuffle_or_identity(inp, group_num > 1),
            *conv_bn(hidden, oup, 1, groups=group_num),
        )

    def forward(self, x: Features) -> Features:
        features, tokens = x
        out = self.conv(features)
        return (out + features if self.identity else out), tokens


class DownBlock(Bridges):
    """dw-pw-dw-pw block (official ``DnaBlock3``), used for the stride-2 blocks.

    Tokens: Mobile→Former on the input, then Former. Mobile path: dw3×3/s (×e1) + BN → dynamic ReLU →
    pw + BN (=: skip) → dw3×3 (×e2) + BN → dynamic ReLU → pw + BN, plus the inner skip; then
    Former→Mobile, then the outer identity when stride 1 and inp == oup.
    """

    def __init__(self, inp: int, oup: int, stride: int, e1: int, e2: int, group_num: int, token_dim: int,
                 arch: dict) -> None:
        super().__init__()
        hidden1, hidden2 = inp * e1, oup * e2
        self.identity = stride == 1 and inp == oup
        shuffle = group_num > 1
        self.conv1 = nn.Sequential(*conv_bn(inp, hidden1, 3, stride, groups=inp), shuffle_or_identity(inp, shuffle))
        self.hyper1 = self._coeffs(token_dim, hidden1, arch)
        self.act1 = DynamicReLU()
        self.conv2 = nn.Sequential(*conv_bn(hidden1, oup, 1, groups=group_num))
        self.conv3 = nn.Sequential(*conv_bn(oup, hidden2, 3, groups=oup), shuffle_or_identity(oup, shuffle))
        self.hyper3 = self._coeffs(token_dim, hidden2, arch)
        self.act3 = DynamicReLU()
        self.conv4 = nn.Sequential(*conv_bn(hidden2, oup, 1, groups=group_num))
        self._init_bridges(inp, oup, token_dim, arch)

    def forward(self, x: Features) -> Features:
        features, tokens = x
        tokens = self.global_block(self.local_global(features, tokens))
        out = self.act1(self.conv1(features), self.hyper1(tokens))
        skip = self.conv2(out)
        out = self.act3(self.conv3(skip), self.hyper3(tokens))
        out = self.global_local(self.conv4(out) + skip, tokens)
        return (out + features if self.identity else out), tokens


class Block(Bridges):
    """pw-dw-pw block (official ``DnaBlock``), the stride-1 block.

    Tokens: Mobile→Former on the input, then Former. Mobile path: pw (×e1) + BN → dynamic ReLU →
    dw3×3 + BN → dynamic ReLU → pw + BN; the identity is added *before* Former→Mobile.
    """

    def __init__(self, inp: int, oup: int, stride: int, e1: int, group_num: int, token_dim: int,
                 arch: dict) -> None:
        super().__init__()
        hidden = inp * e1
        self.identity = stride == 1 and inp == oup
        shuffle = group_num > 1
        self.conv1 = nn.Sequential(*conv_bn(inp, hidden, 1, groups=group_num), shuffle_or_identity(group_num, shuffle))
        self.hyper1 = self._coeffs(token_dim, hidden, arch)
        self.act1 = DynamicReLU()
        self.conv2 = nn.Sequential(*conv_bn(hidden, hidden, 3, stride, groups=hidden))
        self.hyper2 = self._coeffs(token_dim, hidden, arch)
        self.act2 = DynamicReLU()
        self.conv3 = nn.Sequential(*conv_bn(hidden, oup, 1, groups=group_num), shuffle_or_identity(group_num, shuffle))
        self._init_bridges(inp, oup, token_dim, arch)

    def forward(self, x: Features) -> Features:
        features, tokens = x
        tokens = self.global_block(self.local_global(features, tokens))
        out = self.act1(self.conv1(features), self.hyper1(tokens))
        out = self.act2(self.conv2(out), self.hyper2(tokens))
        out = self.conv3(out)
        if self.identity:
            out = out + features
        return self.global_local(out, tokens), tokens


class MergeClassifier(nn.Module):
    """Head: 1×1 conv (×expansion) + BN + ReLU6 → avg pool + h_swish, concat token 0 → Linear + BN1d +
    h_swish → dropout → Linear."""

    def __init__(self, inp: int, num_features: int, num_classes: int, token_dim: int, group_num: int,
                 expansion: int, dropout: float) -> None:
        super().__init__()
        hidden = inp * expansion
        self.conv = nn.Sequential(shuffle_or_identity(group_num, group_num > 1), *conv_bn(inp, hidden, 1, groups=group_num))
        self.act = nn.ReLU6()
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Hardswish())
        self.fc = nn.Sequential(nn.Linear(hidden + token_dim, num_features), nn.BatchNorm1d(num_features), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.act(self.conv(features))).flatten(1)
        return self.classifier(self.fc(torch.cat([x, tokens[0]], dim=1)))


__all__ = [
    "Block",
    "ChannelShuffle",
    "DownBlock",
    "DyReLUCoefficients",
    "DynamicReLU",
    "Former",
    "Former2Mobile",
    "LiteBlock",
    "MergeClassifier",
    "Mobile2Former",
]
