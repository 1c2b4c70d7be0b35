"""A precheck never hides a match: whenever a pass's precheck says "not applicable", its apply finds nothing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hybridexport.rewrite.base import get_pass
from hybridexport.rewrite.pipeline import DEFAULT_PASSES

from models import TinyNet


class TokenMlp(nn.Module):
    """Linear layers over tokens and a softmax over channels: no attention, no BatchNorm, no known block."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.flatten(2).transpose(1, 2)
        return self.fc2(torch.softmax(self.fc1(t), dim=-1))


def cases() -> list[tuple[str, object]]:
    return [
        ("tinynet", lambda: (TinyNet().eval(), torch.randn(1, 3, 16, 16))),
        ("token-mlp", lambda: (TokenMlp().eval(), torch.randn(1, 8, 4, 4))),
        ("vit-block", lambda: _vit()),  # timm Block: linear-to-conv's and split-heads' pattern
        ("mobilevit-xxs", lambda: _mobilevit()),
    ]


def _vit() -> tuple[nn.Module, torch.Tensor]:
    from timm.models.vision_transformer import VisionTransformer

    m = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=4).eval()
    return m, torch.randn(1, 3, 32, 32)


def _mobilevit() -> tuple[nn.Module, torch.Tensor]:
    import timm

    return timm.create_model("mobilevit_xxs", pretrained=False, num_classes=4).eval(), torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize(("label", "make"), cases(), ids=[c[0] for c in cases()])
def test_a_pass_the_precheck_rules_out_finds_nothing_to_rewrite(label: str, make) -> None:
    model, x = make()
    ruled_out = 0
    for name in DEFAULT_PASSES + ("linear-to-conv",):
        rewrite = get_pass(name)
        why = rewrite.precheck(model)
        if not why:
            continue
        ruled_out += 1
        with torch.no_grad():
            outcome = rewrite.apply(copy.deepcopy(model), x)
        assert outcome.matched <= 0, f"{name}: precheck said '{why}' but apply rewrote {outcome.matched} on {label}"
    assert ruled_out > 0  # every case has passes that do not apply to it


def test_the_linear_to_conv_precheck_admits_a_vit_block_and_rules_out_plain_linears() -> None:
    pass_ = get_pass("linear-to-conv")
    vit, x = _vit()
    assert pass_.precheck(vit) == ""
    with torch.no_grad():
        assert pass_.apply(copy.deepcopy(vit), x).matched > 0
    assert pass_.precheck(TokenMlp()) != ""
