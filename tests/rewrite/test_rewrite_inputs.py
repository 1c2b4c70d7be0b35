"""The rewrite pipeline on models with several inputs, and ``hybridexport rewrite`` on a model file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from hybridexport.cli import main
from hybridexport.rewrite.pipeline import run_pipeline

TWO = textwrap.dedent('''
    import torch
    from torch import nn


    class Two(nn.Module):
        def __init__(self, c=8):
            super().__init__()
            self.conv = nn.Conv2d(3, c, 3, padding=1)
            self.bn = nn.BatchNorm2d(c)
            self.proj = nn.Linear(6, c)

        def forward(self, image, tokens):
            return self.bn(self.conv(image)).mean((2, 3)) + self.proj(tokens).mean(1)


    def make(c=8):
        m = Two(c)
        with torch.no_grad():
            m.bn.running_mean.uniform_(-1, 1)
            m.bn.running_var.uniform_(0.5, 2)
        return m.eval()
''')


def _two(tmp_path: Path) -> Path:
    path = tmp_path / "two.py"
    path.write_text(TWO)
    return path


def test_two_input_model_is_rewritten_and_verified(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("two", _two(tmp_path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model: nn.Module = mod.make(4)
    examples = (torch.randn(1, 3, 16, 16), torch.randn(1, 5, 6))
    rewritten, report = run_pipeline(model, examples, passes=["fuse-bn"])
    assert report.applied() == ["fuse-bn"], report.to_dict()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in rewritten.modules())
    x = (torch.randn(1, 3, 16, 16), torch.randn(1, 5, 6))
    torch.testing.assert_close(rewritten(*x), model(*x), rtol=1e-5, atol=1e-6)
    # one tensor is still accepted for a one-input model
    one = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    _, rep = run_pipeline(one, torch.randn(1, 3, 8, 8), passes="fuse-bn", count=False)
    assert rep.applied() == ["fuse-bn"]


def test_rewrite_command_takes_a_model_file_and_input_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"{_two(tmp_path)}:make(c=4)"
    code = main(["rewrite", ref, "--input-shape", "1x3x24x20", "--input-shape", "1x5x6", "--passes", "fuse-bn", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["input_shapes"] == [[1, 3, 24, 20], [1, 5, 6]]
    assert [p["name"] for p in data["passes"] if p["applied"]] == ["fuse-bn"]


def test_rewrite_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rewrite", str(tmp_path / "missing.py:make")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.py" in err and "\n" not in err
    assert main(["rewrite", f"{_two(tmp_path)}:make", "--resolution", "32", "--input-shape", "1x3x32x32"]) == 2
    assert "pass one" in capsys.readouterr().err
