"""The cheap rewrite stage: prechecks skip copies and traces, graphs are shared, one final check on all inputs."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from torch import nn

from hybridexport.rewrite import _graph, base, pipeline
from hybridexport.rewrite.base import PassOutcome, RewritePass
from hybridexport.rewrite.fuse_bn import find_pairs_in_graph
from hybridexport.rewrite.pipeline import run_pipeline


class ConvBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.bn2 = nn.BatchNorm2d(8)
        with torch.no_grad():
            for bn in (self.bn, self.bn2):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn(self.conv(x)))))


class Branchy(ConvBn):
    """Data-dependent control flow: fx cannot trace it, torch.export can (the branch is on a shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if y.shape[-1] > 4:
            y = torch.relu(y)
        return self.bn2(self.conv2(y))


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_precheck_skips_copy_and_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    copies, exports = [], []
    monkeypatch.setattr(pipeline, "copy", SimpleNamespace(deepcopy=lambda m: copies.append(m) or copy.deepcopy(m)))
    monkeypatch.setattr(_graph.GraphCache, "_get", lambda self, kind, make: exports.append(kind) or make())
    model, report = run_pipeline(Plain(), torch.randn(1, 3, 16, 16), count=False)
    assert len(copies) == 1  # the private copy of the input model, none per pass
    assert not exports
    assert all(p.reason.startswith("not applicable: ") and not p.applied for p in report.passes)
    assert {p.name: p.reason for p in report.passes}["fuse-bn"] == "not applicable: no BatchNorm in the model"


def test_the_graph_is_shared_and_remade_after_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[nn.Module] = []
    real = _graph.fx_graph
    monkeypatch.setattr(_graph, "fx_graph", lambda m, x: made.append(m) or real(m, x))
    x = torch.randn(1, 3, 16, 16)
    cache = _graph.GraphCache(ConvBn().eval(), x)
    assert cache.fx_traced() is cache.fx_traced() and len(made) == 1
    cache.invalidate(ConvBn().eval())
    cache.fx_traced()
    assert len(made) == 2 and cache.made["fx"] == 2
    # in the pipeline: counted before (export) and after; fuse-bn changes the model, so "after" is a new export
    exports: list[nn.Module] = []
    real_export = _graph.GraphCache.exported
    monkeypatch.setattr(_graph.GraphCache, "exported", lambda self: exports.append(self.model) or real_export(self))
    run_pipeline(ConvBn(), x, passes=["fuse-bn"])
    assert len(exports) == 2 and exports[0] is not exports[1]
    exports.clear()
    run_pipeline(Plain(), x, passes=["fuse-bn"])  # nothing changed: the "after" count reuses the graph
    assert len(exports) == 2 and exports[0] is exports[1]


class BreaksOnOtherInputs(RewritePass):
    """Before: ``relu``. After: exact on the example input (all ≥ 0), wrong on any negative value."""

    name: ClassVar[str] = "test-breaks"
    summary: ClassVar[str] = "relu → identity (wrong on negative inputs)"

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        model.act = nn.Identity()
        return PassOutcome(1, ["relu → identity"])


class CopiesConv(RewritePass):
    """Before: ``conv``. After: an equal copy of it (exact everywhere)."""

    name: ClassVar[str] = "test-copies"
    summary: ClassVar[str] = "conv → a copy of it"

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        model.conv = copy.deepcopy(model.conv)
        return PassOutcome(1, ["conv copied"])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


def test_final_check_drops_a_pass_that_fails_on_the_other_input(monkeypatch: pytest.MonkeyPatch) -> None:
    base.load_passes()
    monkeypatch.setitem(base.PASSES, BreaksOnOtherInputs.name, BreaksOnOtherInputs)
    monkeypatch.setitem(base.PASSES, CopiesConv.name, CopiesConv)
    x = torch.rand(1, 3, 8, 8)  # non-negative: the broken pass verifies on it
    model, report = run_pipeline(Net(), x, passes=["test-breaks", "fuse-bn", "test-copies"], count=False)
    rec = {p.name: p for p in report.passes}
    assert rec["test-breaks"].failed and not rec["test-breaks"].applied
    assert rec["test-breaks"].reason.startswith("dropped: the final check failed")
    assert rec["fuse-bn"].applied  # runs first (canonical order) and stays
    assert isinstance(model.act, nn.ReLU) and isinstance(model.bn, nn.Identity)
    assert report.final_max_abs_err <= 1e-5 * report.output_scale
    assert rec["test-copies"].applied and "applied again without test-breaks" in rec["test-copies"].notes[-1]
    assert report.applied() == ["fuse-bn", "test-copies"]


def test_fuse_bn_pairs_on_fx_match_torch_export() -> None:
    model, x = ConvBn().eval(), torch.randn(1, 3, 16, 16)
    fx_pairs = find_pairs_in_graph(model, _graph.fx_graph(model, x))
    export_pairs = find_pairs_in_graph(model, _graph.export_graph(model, x))
    assert fx_pairs == export_pairs and len(fx_pairs[0]) == 2


def test_fuse_bn_falls_back_to_export_when_fx_cannot_trace() -> None:
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(Exception, match="control flow"):
        _graph.fx_graph(Branchy().eval(), x)
    cache = _graph.GraphCache(Branchy().eval(), x)
    model, report = run_pipeline(Branchy(), x, passes=["fuse-bn"], count=False)
    rec = report.passes[0]
    assert rec.applied and rec.matched == 2 and not rec.notes
    assert isinstance(model.bn, nn.Identity) and isinstance(model.bn2, nn.Identity)
    with pytest.raises(Exception, match="control flow"):  # the failure is kept, not retraced
        cache.fx_traced()
    with pytest.raises(Exception, match="control flow"):
        cache.fx_traced()
    assert cache.made["fx"] == 1
