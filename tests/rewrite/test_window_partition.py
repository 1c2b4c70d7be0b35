"""``window-partition-rank4``: window/grid partitions without rank-6 tensors, same outputs; what remains
rank ≥ 5 is named in the report."""

from __future__ import annotations

import math

import hybridexport._tvshim  # noqa: F401

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.models import maxxvit, swin_transformer
from timm.models.swin_transformer import window_partition, window_reverse
from torch import nn

from hybridexport import modpath
from hybridexport.analyze.ops import HIGH_RANK, export_program, max_rank
from hybridexport.rewrite import window_partition as wp
from hybridexport.rewrite.pipeline import run_pipeline

torch.set_num_threads(1)


def _max_rank(fn, x: torch.Tensor, *args) -> int:
    """The largest rank of any tensor in the exported graph of ``fn(x, *args)``."""

    class Wrap(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return fn(t, *args)

    graph = export_program(Wrap(), x).graph
    return max(max_rank(n) for n in graph.nodes if n.op == "call_function")


@st.composite
def shape_and_perm(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    rank = draw(st.integers(5, 7))
    shape = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    perm = draw(st.permutations(list(range(rank))))
    return shape, perm


@settings(max_examples=60, deadline=None)
@given(shape_and_perm())
def test_permute_rank4_equals_permute_with_rank4_views(case: tuple[list[int], list[int]]) -> None:
    shape, perm = case
    x = torch.arange(math.prod(shape), dtype=torch.float32)
    got = wp.permute_rank4(x, shape, perm)
    assert torch.equal(got.reshape(-1), x.reshape(shape).permute(perm).reshape(-1))
    assert got.dim() <= 4


def _timm_cases() -> list[tuple[object, object, torch.Tensor, tuple]]:
    x_cl, x_cf = torch.randn(2, 8, 12, 5), torch.randn(2, 5, 8, 12)
    ws, size = (4, 3), (8, 12)
    return [
        (maxxvit.window_partition, wp.window_partition, x_cl, (ws,)),
        (maxxvit.grid_partition, wp.grid_partition, x_cl, (ws,)),
        (maxxvit.window_partition_nchw, wp.window_partition_nchw, x_cf, (ws,)),
        (maxxvit.grid_partition_nchw, wp.grid_partition_nchw, x_cf, (ws,)),
        (lambda t, w: maxxvit.window_reverse(maxxvit.window_partition(t, w), w, size),
         lambda t, w: wp.window_reverse(wp.window_partition(t, w), w, size), x_cl, (ws,)),
        (lambda t, w: maxxvit.grid_reverse(maxxvit.grid_partition(t, w), w, size),
         lambda t, w: wp.grid_reverse(wp.grid_partition(t, w), w, size), x_cl, (ws,)),
        (lambda t, w: maxxvit.window_reverse_nchw(t, w, size),
         lambda t, w: wp.window_reverse_nchw(t, w, size), maxxvit.window_partition_nchw(x_cf, ws), (ws,)),
        (lambda t, w: maxxvit.grid_reverse_nchw(t, w, size),
         lambda t, w: wp.grid_reverse_nchw(t, w, size), maxxvit.grid_partition_nchw(x_cf, ws), (ws,)),
        (lambda t, w: swin_transformer.window_reverse(t, w, *size),
         lambda t, w: wp.window_reverse(t, w, *size), maxxvit.window_partition(x_cl, ws), (ws,)),
    ]


@pytest.mark.parametrize("index", range(len(_timm_cases())))
def test_rank4_functions_equal_timm_and_stay_rank4(index: int) -> None:
    timm_fn, ours, x, args = _timm_cases()[index]
    assert torch.equal(ours(x, *args), timm_fn(x, *args))
    assert _max_rank(ours, x, *args) < HIGH_RANK
    assert _max_rank(timm_fn, x, *args) == 6


class SwinLike(nn.Module):
    """A tiny Swin/MaxViT-like block: window attention then grid attention on (B, H, W, C); the partition
    functions are called by imported name (swin) and as module attributes (maxxvit)."""

    def __init__(self, c: int = 8, ws: int = 4) -> None:
        super().__init__()
        self.ws = (ws, ws)
        self.norm = nn.LayerNorm(c)
        self.qkv_w, self.qkv_g = nn.Linear(c, 3 * c), nn.Linear(c, 3 * c)

    def _attend(self, qkv: nn.Linear, windows: torch.Tensor) -> torch.Tensor:
        """Single-head attention inside each window (rank 3)."""
        b, h, w, c = windows.shape
        q, k, v = qkv(windows.reshape(b, h * w, c)).chunk(3, dim=-1)
        return ((q @ k.transpose(1, 2)) * c ** -0.5).softmax(-1).matmul(v).reshape(b, h, w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[1:3]
        y = self.norm(x)
        y = window_reverse(self._attend(self.qkv_w, window_partition(y, self.ws)), self.ws, size[0], size[1])
        x = x + y
        g = maxxvit.grid_reverse(self._attend(self.qkv_g, maxxvit.grid_partition(x, self.ws)), self.ws, size)
        return x + g


class Net(nn.Module):
    def __init__(self, inline: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = SwinLike()
        self.inline = inline

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x).permute(0, 2, 3, 1))
        if self.inline:  # a rank-6 view written inline: no function to swap
            b, h, w, c = x.shape
            x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return x.mean((1, 2))


def test_swin_like_block_is_rewritten_verified_and_rank4(tmp_path) -> None:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(1, 3, 16, 16)
    new, report = run_pipeline(model, x, passes=["window-partition-rank4"])
    rec = report.passes[0]
    assert rec.applied and rec.matched == 1, rec
    assert "swin_transformer.window_partition" in rec.changes[0] and "maxxvit.grid_reverse" in rec.changes[0]
    assert type(new.block).__name__ == "RankFourSwinLike" and isinstance(new.block, SwinLike)
    assert report.rank5_before > 0 and report.rank5_after == 0 and report.rank5_remaining == []
    y = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(new(y), model(y), rtol=0, atol=0)

    from hybridexport.export.formats.onnx import FORMAT
    from hybridexport.export.options import ExportOptions

    opts = ExportOptions(precision="fp32")
    before = FORMAT.convert(model, (x,), tmp_path / "before.onnx", opts).table.rank5_tensors()
    after = FORMAT.convert(new, (x,), tmp_path / "after.onnx", opts).table.rank5_tensors()
    assert before > 0 and after == 0, (before, after)


def test_inline_rank6_view_is_named_in_the_report() -> None:
    model = Net(inline=True).eval()
    _, report = run_pipeline(model, torch.randn(1, 3, 16, 16), passes=["window-partition-rank4"])
    assert report.passes[0].applied
    assert report.rank5_after and report.rank5_after > 0
    assert report.rank5_remaining and report.rank5_remaining[0].startswith(f"{modpath.ROOT} (Net): ")
    assert "view" in report.rank5_remaining[0] and "permute" in report.rank5_remaining[0]
    assert report.to_dict()["rank5_remaining"] == report.rank5_remaining


def test_not_applicable_without_partition_functions() -> None:
    _, report = run_pipeline(nn.Sequential(nn.Conv2d(3, 4, 1)), torch.randn(1, 3, 4, 4),
                             passes=["window-partition-rank4"], count=False)
    rec = report.passes[0]
    assert not rec.applied and not rec.failed and rec.reason.startswith("not applicable")


def test_timm_maxvit_partition_block() -> None:
    cfg = maxxvit.MaxxVitTransformerCfg(dim_head=8, window_size=4, grid_size=4)
    block = nn.Sequential(maxxvit.PartitionAttentionCl(16, "block", cfg), maxxvit.PartitionAttentionCl(16, "grid", cfg))
    x = torch.randn(1, 8, 8, 16)
    new, report = run_pipeline(block.eval(), x, passes=["window-partition-rank4"])
    assert report.passes[0].applied and report.passes[0].matched == 2
    assert report.rank5_before > 0 and report.rank5_after == 0
