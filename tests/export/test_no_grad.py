"""Exporters, the rewrite passes' graph exports and the pipeline run without autograd: a module that records
``torch.is_grad_enabled()`` in its forward sees False in every trace."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from hybridexport.export import convert
from hybridexport.rewrite._graph import export_graph
from hybridexport.rewrite.pipeline import run_pipeline

from models import loaded

torch.set_num_threads(1)


class GradRecorder(nn.Module):
    """conv → BatchNorm (so that fuse-bn exports it) → mean; every forward appends the grad mode to ``seen``
    (a class attribute: deep copies record into the same list)."""

    seen: ClassVar[list[bool]] = []

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        GradRecorder.seen.append(torch.is_grad_enabled())
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


@pytest.fixture
def recorder() -> GradRecorder:
    GradRecorder.seen.clear()
    torch.set_grad_enabled(True)
    return GradRecorder().eval()


def test_rewrite_graph_export_runs_without_grad(recorder: GradRecorder) -> None:
    export_graph(recorder, torch.randn(1, 3, 8, 8))
    assert GradRecorder.seen and not any(GradRecorder.seen)
    assert torch.is_grad_enabled()  # and the caller's mode is left as it was


def test_pipeline_runs_passes_verification_and_counts_without_grad(recorder: GradRecorder) -> None:
    _, report = run_pipeline(recorder, torch.randn(1, 3, 8, 8), passes=["fuse-bn"])
    assert report.applied() == ["fuse-bn"]
    assert len(GradRecorder.seen) >= 4 and not any(GradRecorder.seen)


@pytest.mark.parametrize("fmt", ["onnx", "coreml", "tflite"])
def test_exporters_trace_without_grad(recorder: GradRecorder, tmp_path, fmt: str) -> None:
    [man] = convert(loaded(recorder, name="grad-recorder", resolution=8), to=fmt, out=tmp_path, rewrite=False,
                    verify_inputs=1)
    assert man.parity.verified or man.parity.reason
    assert GradRecorder.seen and not any(GradRecorder.seen), GradRecorder.seen
