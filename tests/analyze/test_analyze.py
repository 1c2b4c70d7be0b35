"""Analysis: op histogram, BN folding, MACs and liveness on small modules with hand-computed answers."""

from __future__ import annotations

import hybridexport._tvshim  # noqa: F401  (before timm)

import pytest
import torch
from torch import nn

from hybridexport.analyze import graph_ops
from hybridexport.analyze.macs import count_macs
from hybridexport.analyze.memory import peak_activation
from hybridexport.analyze.ops import export_program
from hybridexport.analyze.params import count_params, fold_report
from hybridexport.analyze.stages import stage_paths


class Toy(nn.Module):
    """conv+BN, a rank-5 view with a permute, softmax attention via @, BN→linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.norm = nn.BatchNorm1d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))  # 1×4×8×8
        y = x.view(1, 4, 2, 4, 8).permute(0, 1, 3, 2, 4).reshape(1, 4, 64)  # rank 5 twice (view, permute)
        attn = (y @ y.transpose(-2, -1)).softmax(-1)  # 1×4×4
        z = (attn @ y).mean(-1)  # 1×4
        return self.fc(self.norm(z.repeat(1, 4)))


@pytest.fixture(scope="module")
def toy() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Toy().eval(), torch.randn(1, 2, 8, 8)


def test_graph_ops_counts_categories_and_rank5(toy):
    ops = graph_ops(*toy)
    assert ops["conv"] == 1 and ops["norm"] == 2 and ops["softmax"] == 1
    assert ops["matmul"] == 3  # two @ and the linear
    assert ops["transpose"] == 2  # permute + transpose
    assert ops["reshape"] == 2  # view + reshape
    assert ops["expand"] == 1  # repeat
    assert ops["rank5_tensors"] == 2
    assert ops["aten"]["aten.conv2d"] == 1 and ops["aten"]["aten.matmul"] == 2
    assert ops["total"] == sum(n for k, n in ops["aten"].items() if k != "getitem")


def test_graph_ops_accepts_an_exported_program(toy):
    ep = export_program(*toy)
    assert graph_ops(ep) == graph_ops(*toy)


def test_fold_report_conv_bn_and_bn_linear(toy):
    module, x = toy
    fold = fold_report(export_program(module, x), count_params(module))
    # conv (72 weights, no bias) + BN(4) folds: -8 +4 bias; BN1d(16) → linear(16→10, bias): -32
    assert fold.folded_bn == 2 and fold.unfolded_bn == 0
    assert fold.params == 72 + 8 + 32 + 170
    assert fold.params_fused == 72 + 4 + 170


def test_bn_that_cannot_fold_is_kept():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # the conv output has two users: the BN cannot fold into it

    m = Branchy().eval()
    fold = fold_report(export_program(m, torch.randn(1, 3, 8, 8)), count_params(m))
    assert fold.folded_bn == 0 and fold.unfolded_bn == 1 and fold.params_fused == fold.params


@pytest.mark.parametrize("distillation", [False, True])
def test_fold_matches_timm_fuse_on_iformer(distillation):
    """The analytic fold equals counting timm's own ``IFormer.fuse()`` (distillation heads averaged)."""
    import timm  # after hybridexport._tvshim (imported at the top)

    torch.manual_seed(0)
    m = timm.create_model("iformer_t", distillation=distillation).eval()
    fold = fold_report(export_program(m, torch.randn(1, 3, 64, 64)), count_params(m))
    assert fold.merged_linear == int(distillation)
    m.fuse()
    assert fold.params_fused == count_params(m) == 2_873_032


def test_macs_count_conv_linear_and_matmul(toy):
    module, x = toy
    macs = count_macs(module, x, watch=["conv", "fc"])
    conv = 4 * 8 * 8 * 2 * 9
    matmuls = 4 * 64 * 4 + 4 * 4 * 64
    assert macs.total == conv + matmuls + 16 * 10
    assert macs.by_module["conv"] == conv and macs.by_module["fc"] == 160
    assert macs.output_shapes == {"conv": [1, 4, 8, 8], "fc": [1, 10]}


def test_macs_count_sdpa_like_explicit_attention():
    q = torch.randn(1, 2, 16, 8)

    class Sdpa(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.scaled_dot_product_attention(x, x, x)

    assert count_macs(Sdpa(), q).total == 2 * (2 * 16 * 16 * 8)


def test_peak_activation_liveness():
    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    peak = peak_activation(export_program(Chain().eval(), torch.randn(1, 1, 4, 4)))
    # input 16 → conv 32 (input freed) → relu 32 + conv 32 = 64 → flatten is a view → linear 32 + 10
    assert peak.elements == 64 and peak.bytes == 256 and peak.op == "aten.relu"


def test_peak_activation_counts_sdpa_scores():
    class Attn(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.scaled_dot_product_attention(x, x, x)

    peak = peak_activation(export_program(Attn(), torch.randn(1, 2, 16, 8)))
    # input 256 + output 256 + scores 2·16·16 = 512
    assert peak.elements == 1024 and peak.op == "aten.scaled_dot_product_attention"


def test_stage_paths_expand_stage_containers():
    m = nn.Module()
    m.stem = nn.Conv2d(3, 3, 1)
    m.stages = nn.Sequential(nn.Identity(), nn.Identity())
    m.head = nn.Linear(3, 3)
    assert stage_paths(m) == ["stem", "stages.0", "stages.1", "head"]
