"""``group-norm-rank4``: GroupNorm as explicit rank ≤ 4 statistics.

Converters lower ``group_norm`` through a (B, G, C/G, H, W) tensor (coremltools 9: reshape to rank 5,
reduce, reshape back), which the Neural Engine and the TFLite GPU delegate reject. The same numbers come
from a rank-3 (B, G, C/G·H·W) view: mean and biased variance over its last axis, normalize, view back,
then the per-channel affine as (1, C, 1, 1) tensors. With one group no view is needed at all: the
statistics are a reduction over every axis but the batch.
"""

from __future__ import annotations

from collections import Counter

import hybridexport._tvshim  # noqa: F401  (before anything imports timm/torchvision)

import torch
from torch import nn

from hybridexport.rewrite._graph import set_submodule
from hybridexport.rewrite.base import PassOutcome, RewritePass, count_phrase, module_type_name, register_pass


class RankFourGroupNorm(nn.Module):
    """``F.group_norm`` (biased variance, per-channel affine) computed without any tensor of rank > 4
    for inputs (B, C, *) of rank ≤ 4; keeps the ``drop``/``act`` of timm's ``GroupNormAct``."""

    def __init__(self, src: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups, self.num_channels, self.eps = src.num_groups, src.num_channels, src.eps
        self.weight, self.bias = src.weight, src.bias  # Parameters or None (affine=False)
        drop, act = getattr(src, "drop", None), getattr(src, "act", None)
        self.drop = drop if isinstance(drop, nn.Module) else nn.Identity()
        self.act = act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_groups == 1:
            dims = tuple(range(1, x.dim()))
            mean = x.mean(dim=dims, keepdim=True)
            centered = x - mean
            y = centered * torch.rsqrt((centered * centered).mean(dim=dims, keepdim=True) + self.eps)
        else:
            g = x.reshape(x.shape[0], self.num_groups, -1)  # (B, G, C/G·H·W)
            centered = g - g.mean(dim=-1, keepdim=True)
            var = (centered * centered).mean(dim=-1, keepdim=True)
            y = (centered * torch.rsqrt(var + self.eps)).reshape(x.shape)
        shape = (1, self.num_channels) + (1,) * (x.dim() - 2)
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return self.act(self.drop(y))


def _known_forwards() -> frozenset[object]:
    """``forward`` functions that are exactly ``F.group_norm`` (then drop and act for timm's Act classes)."""
    classes: list[type[nn.Module]] = [nn.GroupNorm]
    try:
        from timm.layers.norm import GroupNorm, GroupNorm1
        from timm.layers.norm_act import GroupNorm1Act, GroupNormAct

        classes += [GroupNorm, GroupNorm1, GroupNormAct, GroupNorm1Act]
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return frozenset(cls.forward for cls in classes)


@register_pass
class GroupNormRankFour(RewritePass):
    """Replace every GroupNorm by the same statistics on a rank-3 view (no rank-5 tensor in any format).

    Before::

        x (B,C,H,W) ─ group_norm(G, γ, β)            Core ML: reshape (B,G,C/G,H,W) ─ reduce ─ reshape
    After (G > 1)::

        x ─ reshape (B,G,C/G·H·W) ─ x−mean ─ ·rsqrt(mean(x−mean)²+ε) ─ reshape (B,C,H,W) ─ ·γ(1,C,1,1) ─ +β
    After (G = 1)::

        x ─ x−mean(dim=1,2,3) ─ ·rsqrt(mean((x−mean)², dim=1,2,3)+ε) ─ ·γ(1,C,1,1) ─ +β

    Matches every ``nn.GroupNorm`` whose class's ``forward`` is that of ``nn.GroupNorm``, timm's
    ``GroupNorm``/``GroupNorm1`` (MobileViTv2; poolformer's ``GroupNorm1NoBias`` inherits it) or
    ``GroupNormAct``/``GroupNorm1Act`` (drop and activation kept); a subclass with a forward of its own
    is left alone and named in the notes.
    """

    name = "group-norm-rank4"
    summary = "GroupNorm as rank-3 statistics + per-channel affine (no rank-5 reshape)"

    def precheck(self, model: nn.Module) -> str:
        if any(isinstance(m, nn.GroupNorm) for path, m in model.named_modules() if path):
            return ""
        return "no GroupNorm in the model"

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        known = _known_forwards()
        done: Counter[str] = Counter()
        groups: Counter[str] = Counter()
        skipped: list[str] = []
        for path, mod in list(model.named_modules()):
            if not isinstance(mod, nn.GroupNorm):
                continue
            if type(mod).forward not in known:
                skipped.append(f"{path or '(root)'} ({module_type_name(mod)}: a forward of its own)")
                continue
            new = RankFourGroupNorm(mod)
            if path:
                set_submodule(model, path, new)
            else:  # the model is a GroupNorm itself: nothing to hang the replacement on
                skipped.append("(root) (the model itself)")
                continue
            done[module_type_name(mod)] += 1
            groups["1 group" if mod.num_groups == 1 else
                   ("one group per channel" if mod.num_groups == mod.num_channels else f"{mod.num_groups} groups")] += 1
        notes = [f"left as is: {s}" for s in skipped]
        if not done:
            notes.insert(0, "no GroupNorm of a known kind")
            return PassOutcome(0, notes=notes)
        detail = ", ".join(f"{n}× {k}" for k, n in sorted(groups.items()))
        return PassOutcome(sum(done.values()), [count_phrase(done, "rewrote", f"as rank ≤ 4 statistics ({detail})")],
                           notes)
