"""Models written for the tests (fast conversions), and a LoadedModel around any small nn.Module.

``TinyNet`` is the one small network most tests use; the recordings under ``tests/data/bench/`` were
made from ``TinyNet()`` by ``tests/data/bench/tinynet.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from hybridexport.zoo import LoadedModel, ModelSpec


class Block(nn.Module):
    """conv3×3 → BatchNorm → GELU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class TinyNet(nn.Module):
    """A two-level module tree (stem, body, head) small enough to convert to any format in seconds.

    ``classes=300`` gives the head 2400 weights, above coremltools' 2048-element threshold for weight
    quantization (the int8 tests)."""

    def __init__(self, classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.stem = Block(3, width)
        self.body = Block(width, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(x)) + x.mean(1, keepdim=True)
        return self.head(y.mean((2, 3))).softmax(-1)


class LgammaBlock(nn.Module):
    """Uses torch.lgamma, which none of the four formats can express."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(x.abs() + 1.0)


class NetWithLgamma(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.odd = LgammaBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.odd(self.stem(x)).mean(dim=(2, 3))


class LearnedTokens(nn.Module):
    """Learned tokens attend to a feature map, as in Mobile-Former: a constant on the *left* of a matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.tokens = nn.Parameter(torch.randn(1, 6, 32))
        self.head = nn.Linear(6 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x).flatten(2)  # (1, 32, 64)
        return self.head(torch.matmul(self.tokens, f).flatten(1))


def loaded(module: nn.Module, name: str = "tiny-net", resolution: int = 16, seed: int = 0) -> LoadedModel:
    """Wrap ``module`` (seeded init, eval mode) like ``build_model`` would."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics so BN folding and fp16 are exercised
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    spec = ModelSpec(name=name, family="timm", variant=name, resolution=resolution, source="tests")
    return LoadedModel(spec=spec, module=module.eval(), resolution=resolution)


def tiny(seed: int = 0, classes: int = 300) -> LoadedModel:
    torch.manual_seed(seed)
    return loaded(TinyNet(classes=classes), seed=seed)


class MobileVitV2Net(nn.Module):
    """One timm MobileViTv2 block: litert-torch 0.10.0's converter passes fail on it without a workaround."""

    def __init__(self) -> None:
        super().__init__()
        import hybridexport._tvshim  # noqa: F401

        from timm.models.mobilevit import MobileVitV2Block

        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = MobileVitV2Block(16, 16, transformer_dim=8, transformer_depth=1, patch_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x)).mean(dim=(2, 3))
