"""attention-graph: attention written four ways is found by its dataflow, rewritten per head, verified,
and exports to ONNX with no tensor above rank 4 and no head permute; look-alikes are left alone."""

from __future__ import annotations

import copy

import hybridexport._tvshim  # noqa: F401

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridexport.rewrite import graph_attention
from hybridexport.rewrite.pipeline import run_pipeline
from hybridexport.rewrite.verify import FP32_REL_TOL

torch.set_num_threads(1)
C, HEADS, N = 16, 4, 12
D = C // HEADS


class ExplicitAttention(nn.Module):
    """reshape (B, N, 3, H, d) + permute + unbind, q·kᵀ scaled plus a per-head bias, explicit matmuls."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.bias = nn.Parameter(torch.randn(HEADS, N, N))
        self.attn_drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)) * D ** -0.5 + self.bias
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class EinsumAttention(nn.Module):
    """Separate q/k/v projections viewed as (B, N, H, d); both products as einsums, heads never permuted."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(C, C) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (p(x).view(b, n, HEADS, D) for p in (self.q, self.k, self.v))
        attn = torch.einsum("bnhd,bmhd->bhnm", q * D ** -0.5, k).softmax(dim=-1)
        return self.proj(torch.einsum("bhnm,bmhd->bnhd", attn, v).reshape(b, n, c))


class SDPAConvAttention(nn.Module):
    """Channel-first (B, C, H, W): 1×1-conv qkv viewed (B, H, 3d, HW) and chunked, SDPA with a bool mask."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Conv2d(C, 3 * C, 1), nn.Conv2d(C, C, 1)
        self.register_buffer("mask", torch.rand(N, N) > 0.3)
        self.mask[:, 0] = True  # every query may attend somewhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, HEADS, 3 * D, -1).chunk(3, dim=2)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2),
                                             attn_mask=self.mask)
        return self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class WindowAttention(nn.Module):
    """Channel-last windows: qkv viewed (B', N, H, 3d), transposed, chunked on channels."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, HEADS, 3 * D).transpose(1, 2).chunk(3, dim=3)
        attn = ((q * D ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class Windowed(nn.Module):
    """Window partition (rank-4 permutes) of a (B, H, W, C) map around WindowAttention, then reverse."""

    def __init__(self, ws: int = 2) -> None:
        super().__init__()
        self.ws, self.attn = ws, WindowAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.ws
        t = x.reshape(b * h // ws, ws, w // ws, ws * c).permute(0, 2, 1, 3).reshape(-1, ws * ws, c)
        t = self.attn(t)
        t = t.reshape(b * h // ws, w // ws, ws, ws * c).permute(0, 2, 1, 3)
        return t.reshape(b, h, w, c)


class Net(nn.Module):
    """Two attention blocks with residuals, so the attention modules are submodules at stable paths."""

    def __init__(self, make) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([make(), make()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = x + blk(x)
        return x


CASES = {
    "explicit": (ExplicitAttention, (2, N, C)),
    "einsum": (EinsumAttention, (2, N, C)),
    "sdpa-conv": (SDPAConvAttention, (2, C, 3, 4)),
    "windowed": (Windowed, (2, 4, 6, C)),
}


def onnx_table(model: nn.Module, x: torch.Tensor):
    from hybridexport.export.formats.onnx import table_of

    with torch.no_grad():
        program = torch.onnx.export(model, (x,), dynamo=True, optimize=True, verbose=False)
    return table_of(program.model_proto)


def record(report, name):
    return next(p for p in report.passes if p.name == name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_rewritten_per_head_and_exports_rank4_without_head_permutes(case):
    make, shape = CASES[case]
    torch.manual_seed(0)
    model, x = Net(make).eval(), torch.randn(*shape)
    new, report = run_pipeline(model, x, passes=["split-heads", "attention-graph"])
    assert not record(report, "split-heads").applied  # none of these is a class split-heads knows
    rec = record(report, "attention-graph")
    assert rec.applied and rec.matched == 2, rec.reason
    with torch.no_grad():
        ref, out = model(x), new(x)
    assert float((out - ref).abs().max()) <= FP32_REL_TOL * float(ref.abs().max())
    # the module paths and parameter names stay, and the rewrite survives the pipeline's deepcopy
    assert set(new.state_dict()) == set(model.state_dict())
    attn_paths = {p for p, m in new.named_modules() if isinstance(m, graph_attention.PerHeadModule)}
    assert len(attn_paths) == 2
    copied = copy.deepcopy(new)
    assert set(copied.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        assert torch.equal(copied(x), out)

    table = onnx_table(new, x)
    assert max(op.rank for op in table.ops) <= 4
    in_attn = [op for op in table.ops if any(op.module.startswith(p) for p in attn_paths)]
    assert sum(op.op_type == "Softmax" for op in in_attn) == 2 * HEADS  # per head, inside the attention
    assert not any(op.op_type == "Einsum" for op in in_attn)
    # the only transposes left in the attention swap the two axes of a rank-3 per-head tensor
    assert all(len(s) == 3 for op in in_attn if op.op_type == "Transpose" for s in op.output_shapes)


def test_original_attention_does_permute_heads():
    """The check above can fail: the unrewritten model exports head permutes of rank ≥ 4."""
    torch.manual_seed(0)
    table = onnx_table(Net(ExplicitAttention).eval(), torch.randn(2, N, C))
    assert any(op.op_type == "Transpose" and op.rank >= 4 for op in table.ops)


class SoftmaxOverChannels(nn.Module):
    """Look-alike: softmax over the channels of a conv map, then a matmul; no head split."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.softmax(dim=1) @ x.transpose(-1, -2) @ y


class PerChannelSelfAttention(nn.Module):
    """Look-alike: rank-4 softmax(y·yᵀ)·y over a conv map's rows, the channel axis never split into heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (y @ y.transpose(-1, -2)).softmax(dim=-1) @ y


def test_look_alikes_are_left_alone_with_reasons():
    model = nn.Sequential(SoftmaxOverChannels(), PerChannelSelfAttention()).eval()
    x = torch.randn(1, C, 4, 4)
    new, report = run_pipeline(model, x, passes=["attention-graph"], count=False)
    rec = record(report, "attention-graph")
    assert not rec.applied and not rec.failed and rec.reason.startswith("not applicable")
    notes = " ".join(rec.notes)
    assert "softmax over dim 1" in notes and ": 0" in notes
    assert "no head split" in notes and ": 1" in notes
    assert all(type(m) is type(o) for m, o in zip(new.modules(), model.modules(), strict=True))


def test_split_heads_output_is_left_to_split_heads():
    from timm.layers import Attention

    model = nn.Sequential(Attention(C, num_heads=HEADS)).eval()
    _, report = run_pipeline(model, torch.randn(1, N, C), passes=["split-heads", "attention-graph"], count=False)
    assert record(report, "split-heads").applied
    rec = record(report, "attention-graph")
    assert not rec.applied and any("no head axis" in n and n.endswith(": 0") for n in rec.notes)


def test_wrong_per_head_slice_is_caught_and_module_kept(monkeypatch):
    real = graph_attention._Builder.term

    def wrong_head(self, node, h):
        return real(self, node, (h + 1) % self.core.heads)

    monkeypatch.setattr(graph_attention._Builder, "term", wrong_head)
    model, x = Net(ExplicitAttention).eval(), torch.randn(2, N, C)
    new, report = run_pipeline(model, x, passes=["attention-graph"], count=False)
    rec = record(report, "attention-graph")
    assert not rec.applied and "does not reproduce the module" in " ".join(rec.notes)
    assert all(isinstance(b, ExplicitAttention) for b in new.blocks)


def test_known_class_is_matched_by_dataflow_too():
    """Without split-heads, timm's Attention (fused SDPA path) is found and split by the graph matcher."""
    from timm.layers import Attention

    torch.manual_seed(0)
    model, x = nn.Sequential(Attention(C, num_heads=HEADS, qkv_bias=True)).eval(), torch.randn(2, N, C)
    new, report = run_pipeline(model, x, passes=["attention-graph"], count=False)
    rec = record(report, "attention-graph")
    assert rec.applied and rec.matched == 1 and "1 sdpa" in rec.changes[0]
    assert type(new[0]).__name__ == "PerHeadAttention" and isinstance(new[0], graph_attention.PerHeadModule)
    assert isinstance(new[0].qkv, nn.Linear)


def test_module_called_at_two_shapes_is_left_alone():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = EinsumAttention()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x).sum() + self.attn(x[:, : N // 2]).sum()

    _, report = run_pipeline(Two().eval(), torch.randn(1, N, C), passes=["attention-graph"], count=False)
    rec = record(report, "attention-graph")
    assert not rec.applied and any("called at several input shapes" in n and ": attn" in n for n in rec.notes)


class ShapeBranchAttention(ExplicitAttention):
    """Python control flow on a size: symbolic_trace cannot, MetaTracer (concrete sizes) can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > N:  # never true here, but a Proxy cannot be a bool
            x = x[:, :N]
        return super().forward(x)


def test_meta_tracer_fallback_for_size_dependent_code():
    torch.manual_seed(0)
    model, x = Net(ShapeBranchAttention).eval(), torch.randn(2, N, C)
    new, report = run_pipeline(model, x, passes=["attention-graph"], count=False)
    rec = record(report, "attention-graph")
    assert rec.applied and rec.matched == 2 and "MetaTracer" in rec.changes[1]
    with torch.no_grad():
        assert float((new(x) - model(x)).abs().max()) <= FP32_REL_TOL * float(model(x).abs().max())


def test_other_softmax_in_a_matched_module_stays_with_a_note():
    class WithGate(ExplicitAttention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * x.softmax(dim=1)  # softmax over tokens: not attention

    torch.manual_seed(0)
    model, x = Net(WithGate).eval(), torch.randn(2, N, C)
    new, report = run_pipeline(model, x, passes=["attention-graph"], count=False)
    rec = record(report, "attention-graph")
    assert rec.applied and rec.matched == 2
    assert any("blocks.0 (another softmax in it)" in n for n in rec.notes)
