"""``group-norm-rank4``: every GroupNorm becomes rank ≤ 4 statistics with the same outputs, and the Core ML
program of a GroupNorm model loses its rank-5 tensors."""

from __future__ import annotations

import hybridexport._tvshim  # noqa: F401

import pytest
import torch
from timm.layers.norm import GroupNorm1
from timm.layers.norm_act import GroupNormAct
from torch import nn

from hybridexport.analyze.ops import HIGH_RANK, export_program, max_rank
from hybridexport.rewrite.group_norm import RankFourGroupNorm
from hybridexport.rewrite.pipeline import run_pipeline
from hybridexport.rewrite.verify import FP32_REL_TOL

torch.set_num_threads(1)
C = 8


class Block(nn.Module):
    """conv → GroupNorm → GELU → conv, with non-trivial affine parameters."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.conv1, self.norm, self.conv2 = nn.Conv2d(3, C, 3, padding=1), norm, nn.Conv2d(C, 4, 1)
        if getattr(norm, "weight", None) is not None:
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(nn.functional.gelu(self.norm(self.conv1(x) * 3 + 1)))


def _rewrite(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, object]:
    new, report = run_pipeline(model.eval(), x, passes=["group-norm-rank4"], count=False)
    return new, report


@pytest.mark.parametrize("groups", [1, 4, C])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_is_rewritten_and_equal(groups: int, affine: bool) -> None:
    torch.manual_seed(groups)
    model = Block(nn.GroupNorm(groups, C, affine=affine))
    x = torch.randn(2, 3, 10, 12)
    new, report = _rewrite(model, x)
    rec = report.passes[0]
    assert rec.applied, rec.reason
    assert rec.max_abs_err is not None and rec.max_abs_err <= FP32_REL_TOL * report.output_scale
    assert not any(isinstance(m, nn.GroupNorm) for m in new.modules())
    assert isinstance(new.norm, RankFourGroupNorm) and (new.norm.weight is None) == (not affine)
    y = torch.randn(2, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(new(y), model(y), rtol=1e-5, atol=1e-5)
        g = export_program(new.norm, torch.randn(2, C, 10, 12)).graph
    assert "group_norm" not in str(list(g.nodes))
    assert max(max_rank(n) for n in g.nodes if n.op == "call_function") < HIGH_RANK


def test_timm_subclasses_keep_their_activation_and_a_custom_forward_is_left_alone() -> None:
    class Shifted(nn.GroupNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 1

    class NoBias(GroupNorm1):  # poolformer's GroupNorm1NoBias: same forward, bias removed
        def __init__(self, c: int) -> None:
            super().__init__(c)
            self.bias = None

    model = nn.Sequential(nn.Conv2d(3, C, 1), GroupNormAct(C, 2, act_layer=nn.ReLU), NoBias(C), Shifted(2, C))
    x = torch.randn(1, 3, 6, 6)
    new, report = _rewrite(model, x)
    rec = report.passes[0]
    assert rec.applied and rec.matched == 2, rec
    assert isinstance(new[1].act, nn.ReLU) and isinstance(new[2], RankFourGroupNorm) and type(new[3]) is Shifted
    assert any("Shifted" in n for n in rec.notes)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-5, atol=1e-5)


def test_not_applicable_without_group_norm() -> None:
    _, report = _rewrite(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), torch.randn(1, 3, 4, 4))
    rec = report.passes[0]
    assert not rec.applied and not rec.failed and rec.reason.startswith("not applicable")


def test_core_ml_program_loses_rank5(tmp_path) -> None:
    pytest.importorskip("coremltools")
    from hybridexport.export.formats.coreml import FORMAT
    from hybridexport.export.options import ExportOptions

    model = Block(nn.GroupNorm(4, C)).eval()
    x = torch.randn(1, 3, 16, 16)
    new, _ = _rewrite(model, x)
    opts = ExportOptions(precision="fp32")
    before = FORMAT.convert(model, (x,), tmp_path / "before.mlpackage", opts).table.rank5_tensors()
    after = FORMAT.convert(new, (x,), tmp_path / "after.mlpackage", opts).table.rank5_tensors()
    assert before > 0 and after == 0, (before, after)
