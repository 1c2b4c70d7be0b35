"""Mobile-Former (Chen et al., CVPR 2022), built from the variant configuration in ``models/mobileformer.toml``.

An independent implementation of the author-released code (github AAboys/MobileFormer), reproducing its
logits to ~1e-14 in float64 (see ``tests/test_mobileformer.py``). Blocks are in ``mobileformer_blocks``.

Layouts: image B×3×H×W; global tokens T×B×D (token-major, as the official code); logits B×classes.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from hybridexport.errors import HybridExportError, UnknownModelError
from hybridexport.zoo.cards import load_cards, variant_card
from hybridexport.zoo.mobileformer_blocks import (
    Block,
    DownBlock,
    DynamicReLU,
    LiteBlock,
    MergeClassifier,
    Mobile2Former,
)

__all__ = ["MobileFormer", "create_mobileformer", "elementwise_macs", "rename_official_keys"]

# Official key pattern → this project's name. Only two renames: the attention modules name their
# projections by role (q/k/v/proj) so that generic attention passes recognise them.
OFFICIAL_RENAMES: tuple[tuple[str, str], ...] = (
    (r"(^|\.)global_block\.channel_mlp\.", r"\1global_block.proj."),  # Former output projection
    (r"(^|\.)global_local\.proj\.", r"\1global_local.v."),  # Former→Mobile value projection
)

BLOCK_TYPES = ("dw-pw-dw-pw", "pw-dw-pw")


class MobileFormer(nn.Module):
    """Mobile-Former: a MobileNet-like conv stack and a few global tokens linked by two-way attention.

    ``tokens`` (nn.Embedding T×D) is repeated over the batch as T×B×D; ``stem`` → ``features`` (each
    block maps (x, tokens) → (x, tokens)) → final Mobile→Former ``local_global`` → ``classifier``.
    """

    def __init__(self, card: dict[str, Any], num_classes: int = 1000) -> None:
        super().__init__()
        arch = card["family_card"]["architecture"]
        token_num, token_dim, groups = int(card["token_num"]), int(card["token_dim"]), int(card["group_num"])
        stem = int(card["stem_channels"])
        self.tokens = nn.Embedding(token_num, token_dim)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6())
        blocks: list[nn.Module] = []
        inp = stem
        for cfg in card["blocks"]:
            kind, e1, oup, stride, e2 = cfg["type"], int(cfg["e1"]), int(cfg["out"]), int(cfg["stride"]), int(cfg["e2"])
            if kind not in BLOCK_TYPES:
                raise HybridExportError(
                    f"models/mobileformer.toml: block type '{kind}' of {card['name']} is not one of {BLOCK_TYPES}"
                )
            if kind == "pw-dw-pw":
                blocks.append(Block(inp, oup, stride, e1, groups, token_dim, arch))
            elif e2 == 0:
                blocks.append(LiteBlock(inp, oup, stride, e1, groups))
            else:
                blocks.append(DownBlock(inp, oup, stride, e1, e2, groups, token_dim, arch))
            inp = oup
        self.features = nn.ModuleList(blocks)
        self.local_global = Mobile2Former(inp, token_dim, arch["bridge_heads"])
        self.classifier = MergeClassifier(
            inp, int(card["num_features"]), num_classes, token_dim, groups, arch["head_expansion"], float(card["dropout"])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # T×B×D; a copy (repeat), not a view, so no-grad callers never see a grad-requiring view
        tokens = self.tokens.weight.unsqueeze(1).repeat(1, x.shape[0], 1)
        x = self.stem(x)
        for block in self.features:
            x, tokens = block((x, tokens))
        tokens = self.local_global(x, tokens)
        return self.classifier(x, tokens)


def create_mobileformer(name: str, num_classes: int = 1000) -> MobileFormer:
    """Build ``mobileformer-<variant>`` (e.g. ``mobileformer-294m``) from its model card, randomly initialised."""
    try:
        card = variant_card(name)
    except KeyError:
        raise UnknownModelError(
            f"unknown Mobile-Former variant '{name}'; use one of mobileformer-26m/52m/96m/151m/214m/294m/508m"
        ) from None
    if "blocks" not in card:
        raise UnknownModelError(f"'{name}' is not a Mobile-Former variant (its card has no `blocks`)")
    return MobileFormer(card, num_classes=num_classes)


def rename_official_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map AAboys/MobileFormer state_dict keys onto this implementation's; project keys pass unchanged."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for pattern, repl in OFFICIAL_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def elementwise_macs(model: nn.Module, resolution: int = 224) -> int:
    """The MAdds the paper counts beyond conv + linear + attention matmuls, for one image at ``resolution``.

    That is ``macs_dyrelu_per_element`` (card) per output element of every dynamic ReLU: its two slope
    multiplies and the max (see ``macs_convention`` in ``models/mobileformer.toml``). Add it to the
    FlopCounterMode count (flops / 2) to reproduce the paper's MAdds. Runs one forward pass on zeros.
    """
    per_element = int(load_cards()["mobileformer"]["macs_dyrelu_per_element"])
    elements = 0

    def count(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal elements
        elements += output[:1].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, DynamicReLU)]
    if not hooks:
        raise HybridExportError(f"{type(model).__name__} has no DynamicReLU modules: elementwise_macs is for Mobile-Former")
    param = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution, dtype=param.dtype, device=param.device))
    finally:
        for hook in hooks:
            hook.remove()
    return per_element * elements
