"""``linear-to-conv`` (opt-in, Neural Engine): transformer blocks in the channel-first (B, C, 1, S) layout.

Apple's "Deploying Transformers on the Apple Neural Engine" (machinelearning.apple.com/research/
neural-engine-transformers, Principle 1 "Picking the right data format") and ml-ane-transformers
(``reference/layer_norm.py``, ``reference/multihead_attention.py``): the ANE's native layout is 4-D
channels-first, so channel linears become 1×1 convs on (B, C, 1, S), LayerNorm normalizes dim 1, and
attention is computed per head with einsum on channel splits; the only transpose is one (1, 3) swap
of the keys per attention. For MobileViT the "1" axis is the pixel-in-patch axis P: the unfolded map
(B, C, P, N) is used as is, so the block has no layout transposes at all.
"""

from __future__ import annotations

from collections import Counter

import hybridexport._tvshim  # noqa: F401  (before anything imports timm/torchvision)

import torch
from torch import nn

from hybridexport.rewrite._graph import set_submodule
from hybridexport.rewrite.base import PassOutcome, RewritePass, count_phrase, register_pass
from hybridexport.rewrite.split_heads import SplitHeadAttention
from hybridexport.rewrite.unfold_as_conv import ConvUnfoldMobileVitBlock, PatchFold, PatchUnfold


class LayerNormChannels(nn.Module):
    """``nn.LayerNorm(C)`` over dim 1 of a (B, C, H, S) tensor (ml-ane-transformers' LayerNormANE).

    The affine parameters are stored as (C, 1, 1) so that no reshape op is needed to broadcast them.
    """

    def __init__(self, src: nn.LayerNorm) -> None:
        super().__init__()
        self.eps = src.eps
        w, b = src.weight, getattr(src, "bias", None)
        self.weight = nn.Parameter(w.detach().clone()[:, None, None]) if w is not None else None
        self.bias = nn.Parameter(b.detach().clone()[:, None, None]) if b is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x - x.mean(dim=1, keepdim=True)
        out = centered * torch.rsqrt(centered.pow(2).mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


@torch.no_grad()
def conv1x1_from(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A 1×1 Conv2d computing the same map as a Linear with ``weight`` (out, in) and ``bias``."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=bias is not None, dtype=weight.dtype)
    conv.weight.copy_(weight[:, :, None, None])
    if bias is not None:
        conv.bias.copy_(bias)
    return conv


def _attention_weights(attn: nn.Module) -> tuple[torch.Tensor, ...] | None:
    """(wq·scale, bq·scale, wk, bk, wv, bv) of a timm Attention or a SplitHeadAttention, else None."""
    if isinstance(attn, SplitHeadAttention):
        if not (attn.fold_scale and isinstance(attn.k_norm, nn.Identity)):
            return None
        if not isinstance(attn.norm, nn.Identity) or attn.gate is not None:
            return None
        a = attn.num_heads * attn.head_dim
        w, b = attn.qkv.weight, attn.qkv.bias  # query rows already carry the softmax scale
        return tuple(t for i in range(3) for t in (w[i * a:(i + 1) * a], None if b is None else b[i * a:(i + 1) * a]))
    try:
        from timm.layers import Attention as TimmAttention
    except ImportError:  # pragma: no cover
        return None
    if type(attn) is not TimmAttention:
        return None
    if not all(isinstance(getattr(attn, n), nn.Identity) for n in ("q_norm", "k_norm", "norm")):
        return None
    if getattr(attn, "gate", None) is not None:
        return None
    a = attn.num_heads * attn.head_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    split = (lambda t, i: None if t is None else t[i * a:(i + 1) * a])  # noqa: E731
    return (w[:a] * attn.scale, None if b is None else b[:a] * attn.scale, w[a:2 * a], split(b, 1), w[2 * a:], split(b, 2))


class ChannelFirstAttention(nn.Module):
    """Multi-head self-attention on (B, C, H, S): 1×1 conv projections, einsum per head (attention over
    S independently for each H row), heads concatenated on channels, 1×1 conv output projection."""

    def __init__(self, attn: nn.Module, weights: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        wq, bq, wk, bk, wv, bv = weights
        self.num_heads = attn.num_heads
        self.head_dim = wq.shape[0] // self.num_heads
        self.q, self.k, self.v = conv1x1_from(wq, bq), conv1x1_from(wk, bk), conv1x1_from(wv, bv)
        self.proj = conv1x1_from(attn.proj.weight, attn.proj.bias)
        self.attn_drop, self.proj_drop = attn.attn_drop, attn.proj_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.head_dim
        qs = self.q(x).split(d, dim=1)  # heads × (B, d, H, Sq)
        ks = self.k(x).transpose(1, 3).split(d, dim=3)  # heads × (B, Sk, H, d)
        vs = self.v(x).split(d, dim=1)  # heads × (B, d, H, Sk)
        outs = []
        for q, k, v in zip(qs, ks, vs):
            w = self.attn_drop(torch.einsum("bchq,bkhc->bkhq", q, k).softmax(dim=1))  # (B, Sk, H, Sq)
            outs.append(torch.einsum("bkhq,bchk->bchq", w, v))
        return self.proj_drop(self.proj(torch.cat(outs, dim=1)))


class ChannelFirstMlp(nn.Module):
    """timm ``Mlp`` (fc1 → act → fc2) as 1×1 convs."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.fc1 = conv1x1_from(mlp.fc1.weight, mlp.fc1.bias)
        self.act, self.drop1, self.fc2 = mlp.act, mlp.drop1, conv1x1_from(mlp.fc2.weight, mlp.fc2.bias)
        self.drop2 = mlp.drop2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class ChannelScale(nn.Module):
    """timm ``LayerScale`` (per-channel gamma on the last dim) on dim 1 of (B, C, H, S)."""

    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.gamma = nn.Parameter(gamma.detach().clone()[:, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _scale(ls: nn.Module) -> nn.Module | None:
    if isinstance(ls, nn.Identity):
        return ls
    gamma = getattr(ls, "gamma", None)
    return ChannelScale(gamma) if isinstance(gamma, torch.Tensor) and gamma.dim() == 1 else None


class ChannelFirstBlock(nn.Module):
    """timm ``vision_transformer.Block`` (pre-norm attention + MLP) on (B, C, H, S)."""

    def __init__(self, block: nn.Module, weights: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.norm1, self.attn = LayerNormChannels(block.norm1), ChannelFirstAttention(block.attn, weights)
        self.ls1, self.drop_path1 = _scale(block.ls1), block.drop_path1
        self.norm2, self.mlp = LayerNormChannels(block.norm2), ChannelFirstMlp(block.mlp)
        self.ls2, self.drop_path2 = _scale(block.ls2), block.drop_path2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def convert_block(block: nn.Module) -> ChannelFirstBlock | None:
    """A ChannelFirstBlock for a timm ViT ``Block`` whose parts are all convertible, else None."""
    try:
        from timm.layers import Mlp
        from timm.models.vision_transformer import Block
    except ImportError:  # pragma: no cover
        return None
    if type(block) is not Block or not isinstance(block.norm1, nn.LayerNorm) or not isinstance(block.norm2, nn.LayerNorm):
        return None
    if type(block.mlp) is not Mlp or not isinstance(block.mlp.norm, nn.Identity):
        return None
    weights = _attention_weights(block.attn)
    if weights is None or _scale(block.ls1) is None or _scale(block.ls2) is None:
        return None
    return ChannelFirstBlock(block, weights)


class ChannelFirstMobileVitBlock(nn.Module):
    """MobileViT block whose transformer runs on the unfolded map (B, C, P, N) directly: conv unfold →
    rank-4 reshape → channel-first blocks → reshape → pixel-shuffle fold. No layout transposes."""

    def __init__(self, src: nn.Module, blocks: list[ChannelFirstBlock]) -> None:
        super().__init__()
        self.conv_kxk, self.conv_1x1 = src.conv_kxk, src.conv_1x1
        self.transformer = nn.Sequential(*blocks)
        self.norm = LayerNormChannels(src.norm)
        self.conv_proj, self.conv_fusion = src.conv_proj, src.conv_fusion
        self.patch_size, self.patch_area = tuple(src.patch_size), src.patch_area
        dim = src.conv_1x1.out_channels
        self.unfold = src.unfold if isinstance(src, ConvUnfoldMobileVitBlock) else PatchUnfold(dim, self.patch_size)
        self.fold = src.fold if isinstance(src, ConvUnfoldMobileVitBlock) else PatchFold(dim, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        b, c, h, w = x.shape
        ph, pw = self.patch_size
        new_h, new_w = -(-h // ph) * ph, -(-w // pw) * pw
        resized = (new_h, new_w) != (h, w)
        if resized:
            x = nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        nh, nw = new_h // ph, new_w // pw
        x = self.unfold(x).reshape(b, c, self.patch_area, nh * nw)
        x = self.norm(self.transformer(x))
        x = self.fold(x.reshape(b, c * self.patch_area, nh, nw))
        if resized:
            x = nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = self.conv_proj(x)
        if self.conv_fusion is not None:
            x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x


class TokensChannelFirst(nn.Module):
    """Runs channel-first blocks on (B, N, C) tokens: one transpose in, one out."""

    def __init__(self, blocks: list[ChannelFirstBlock]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)


def _mobilevit_classes() -> tuple[type[nn.Module], ...]:
    try:
        from timm.models.mobilevit import MobileVitBlock
    except ImportError:  # pragma: no cover
        return (ConvUnfoldMobileVitBlock,)
    return (MobileVitBlock, ConvUnfoldMobileVitBlock)


_NONE = "no timm ViT Block / MobileViT transformer to convert"


@register_pass
class LinearToConv(RewritePass):
    """Put transformer blocks in the Neural Engine's channel-first layout (opt-in).

    Before (timm ViT ``Block`` on (B, N, C) tokens)::

        LayerNorm(C) ─ Linear qkv ─ reshape/permute heads ─ SDPA ─ Linear proj ─ LayerNorm ─ Linear ─ act ─ Linear
    After (on (B, C, 1, N), or (B, C, P, N) inside MobileViT)::

        LayerNorm over dim 1 ─ 1×1 conv q,k,v ─ per head einsum(bchq,bkhc→bkhq) ─ softmax(dim 1)
        ─ einsum(bkhq,bchk→bchq) ─ cat(dim 1) ─ 1×1 conv ─ … ─ 1×1 conv ─ act ─ 1×1 conv

    MobileViT blocks feed the unfolded (B, C, P, N) map straight in (no unfold transposes); other
    ``nn.Sequential`` runs of ViT blocks get one transpose in and one out. Not in the host pipelines:
    einsum and the channel-first LayerNorm lower to more ops on CPU runtimes.
    """

    name = "linear-to-conv"
    summary = "transformer blocks in (B, C, 1, S) layout: 1×1 convs, channel LayerNorm, einsum attention"
    opt_in = True

    def precheck(self, model: nn.Module) -> str:
        try:
            from timm.models.vision_transformer import Block
        except ImportError:  # pragma: no cover
            return _NONE
        wanted = {Block, *_mobilevit_classes()}
        return "" if any(type(m) in wanted for path, m in model.named_modules() if path) else _NONE

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        done: Counter[str] = Counter()
        notes: list[str] = []
        mvit = _mobilevit_classes()
        for path, mod in list(model.named_modules()):
            if not path:
                continue
            if isinstance(mod, mvit) and type(mod) in mvit:
                blocks = [convert_block(b) for b in mod.transformer]
                if all(b is not None for b in blocks) and isinstance(mod.norm, nn.LayerNorm):
                    set_submodule(model, path, ChannelFirstMobileVitBlock(mod, blocks))
                    done["MobileViT block"] += 1
                    done["transformer block"] += len(blocks)
                else:
                    notes.append(f"{path}: transformer has blocks this pass cannot convert")
        for path, mod in list(model.named_modules()):
            if path and isinstance(mod, nn.Sequential) and len(mod) and not _inside_converted(model, path):
                blocks = [convert_block(b) for b in mod]
                if all(b is not None for b in blocks):
                    set_submodule(model, path, TokensChannelFirst(blocks))
                    done["transformer block"] += len(blocks)
        if not done:
            return PassOutcome(0, notes=notes or [_NONE])
        return PassOutcome(sum(done.values()), [count_phrase(done, "converted", "to (B, C, 1, S) layout")], notes)


def _inside_converted(model: nn.Module, path: str) -> bool:
    parts = path.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), (ChannelFirstMobileVitBlock, TokensChannelFirst)):
            return True
    return False
