"""Static Neural Engine rules on small hand-built MIL programs and small converted modules."""

from __future__ import annotations

import warnings

import hybridexport._tvshim  # noqa: F401

import pytest
import torch
from torch import nn

from hybridexport.analyze.ane_rules import ane_report, artifact_findings, render_ane_report, summarize
from hybridexport.export import convert
from hybridexport.optable import OpTable

warnings.filterwarnings("ignore")
ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import get_new_symbol, types  # noqa: E402


class Heads(nn.Module):
    """Multi-head attention written the timm way: a rank-5 reshape + permute."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
        return ((q @ k.transpose(-1, -2)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 16)
        self.blocks = nn.Sequential(Heads())

    def forward(self, x):
        return self.blocks(self.embed(x))


def coreml_findings(module: nn.Module, shape: tuple[int, ...], out, passes: list[str] | None = None) -> list:
    """Findings of the Core ML artifact ``convert`` writes for ``module`` (module paths from its op table)."""
    from models import loaded

    lm = loaded(module, name="ane-net")
    lm.input_shapes = [shape]
    [man] = convert(lm, to="coreml", out=out, rewrite=passes is not None, passes=passes, verify_inputs=0)
    return artifact_findings(man.path, OpTable.load(man.op_table_path()).module_of)


def test_rank5_reshape_is_flagged_with_its_module_path(tmp_path):
    findings = coreml_findings(Net(), (1, 8, 16), tmp_path)
    rank5 = [f for f in findings if f.rule == "rank>4"]
    assert rank5, "the rank-5 reshape/permute must be flagged"
    assert {f.module for f in rank5} == {"blocks.0"}
    assert all(f.severity == "off-ane" and "neural-engine-transformers" in f.source for f in rank5)
    assert any(f.op_type == "reshape" and "4,4]" in f.shapes for f in rank5)
    assert not [f for f in findings if f.rule == "dtype"]  # an FP16 program computes in fp16


def test_split_heads_rewrite_clears_rank5_findings(tmp_path):
    from timm.layers import Attention

    holder = nn.Sequential(Attention(16, num_heads=4, qkv_bias=True)).eval()
    before = summarize(coreml_findings(holder, (1, 8, 16), tmp_path / "a"))
    after = summarize(coreml_findings(holder, (1, 8, 16), tmp_path / "b", passes=["split-heads"]))
    assert before.get("rank>4", 0) > 0
    assert after.get("rank>4", 0) == 0 and after.get("off-ane", 0) == 0


def test_hand_built_program_rules():
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8, 8)), mb.TensorSpec(shape=(3,), dtype=types.int32)])
    def prog(x, idx):
        y = mb.conv(x=x, weight=torch.randn(4, 4, 3, 3).numpy(), dilations=[2, 2], pad_type="same", name="dil")
        g = mb.gather(x=y, indices=idx, axis=1, name="pick")
        r = mb.reshape(x=g, shape=[1, 3, 2, 4, 8], name="to5d")
        return mb.reduce_sum(x=r, axes=[2], name="sum")

    findings = ane_report(prog, {"dil": "stem.conv", "pick": "head.gather"}.get)
    rules = {(f.rule, f.op_name) for f in findings}
    assert ("dilated-conv", "dil") in rules
    assert ("gather", "pick") in rules
    assert ("rank>4", "to5d") in rules
    assert ("dtype", "dil") in rules  # an fp32 program does not run on the ANE
    mods = {f.op_name: f.module for f in findings}
    assert mods["dil"] == "stem.conv" and mods["pick"] == "head.gather"


def test_dynamic_shape_and_big_dimension():
    seq = get_new_symbol()

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, seq, 8), dtype=types.fp16),
                             mb.TensorSpec(shape=(1, 20000), dtype=types.fp16)])
    def prog(x, y):
        return mb.relu(x=x, name="dyn"), mb.relu(x=y, name="wide")

    found = {(f.rule, f.op_name) for f in ane_report(prog)}
    assert ("dynamic-shape", "dyn") in found
    assert ("dim>16384", "wide") in found
    assert not any(rule == "dtype" for rule, _ in found)


def test_op_table_carries_the_findings_and_render(tmp_path):
    from models import loaded

    lm = loaded(Net(), name="ane-net")
    lm.input_shapes = [(1, 8, 16)]
    [man] = convert(lm, to="coreml", out=tmp_path, rewrite=False, verify_inputs=0)
    table = OpTable.load(man.op_table_path())
    flagged = {o.name: o.findings for o in table.ops if o.findings}
    again = artifact_findings(man.path, table.module_of)
    assert {f.op_name for f in again} == set(flagged)
    assert all(f"{f.severity}:{f.rule}" in flagged[f.op_name] for f in again)
    assert any("off-ane:rank>4" in fs for fs in flagged.values())
    assert {table.module_of(f.op_name) for f in again if f.rule == "rank>4"} == {"blocks.0"}
    from rich.console import Console

    con = Console(width=200, record=True)
    render_ane_report(again, console=con)
    text = con.export_text()
    assert "rank>4" in text and "blocks.0" in text and "machinelearning.apple.com" in text


def test_info_coreml_reads_the_artifact_convert_writes(tmp_path, capsys):
    """`info MODEL --coreml` shows the findings of the program `convert` writes (before and after rewrite)."""
    from hybridexport.cli import main

    args = ["info", "mobilevit-xxs", "--resolution", "64", "--coreml", "--json", "--out", str(tmp_path)]
    assert main([*args, "--no-rewrite"]) == 0
    import json

    before = json.loads(capsys.readouterr().out)["coreml"]
    flagged = {f["module"] for f in before["findings"] if f["rule"] == "rank>4"}
    assert "stages.2.1.transformer.0.attn" in flagged
    assert main(args) == 0
    after = json.loads(capsys.readouterr().out)["coreml"]
    assert not [f for f in after["findings"] if f["severity"] == "off-ane"]
    assert {p.name for p in (tmp_path / "mobilevit-xxs").iterdir() if p.suffix == ".mlpackage"} == {
        "mobilevit-xxs.64.fp16.mlpackage"}
