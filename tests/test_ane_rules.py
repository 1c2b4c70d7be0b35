"""Static Neural Engine rules on small hand-built MIL programs and small converted modules."""

from __future__ import annotations

import warnings

import hybridexport._tvshim  # noqa: F401

import pytest
import torch
from torch import nn

from hybridexport.analyze.ane_rules import (
    ane_report,
    convert_for_ane,
    module_map_from_exported_program,
    render_ane_report,
    summarize,
)
from hybridexport.rewrite.pipeline import run_pipeline

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


def test_rank5_reshape_is_flagged_with_its_module_path():
    findings = ane_report(convert_for_ane(Net().eval(), torch.randn(1, 8, 16)))
    rank5 = [f for f in findings if f.rule == "rank>4"]
    assert rank5, "the rank-5 reshape/permute must be flagged"
    assert {f.module for f in rank5} == {"blocks.0"}
    assert all(f.severity == "off-ane" and "neural-engine-transformers" in f.source for f in rank5)
    assert any(f.op_type == "reshape" and "4,4]" in f.shapes for f in rank5)
    assert not [f for f in findings if f.rule == "dtype"]  # an FP16 program computes in fp16


def test_split_heads_rewrite_clears_rank5_findings():
    from timm.layers import Attention

    holder = nn.Sequential(Attention(16, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(1, 8, 16)
    before = summarize(ane_report(convert_for_ane(holder, x)))
    rewritten, _ = run_pipeline(holder, x, passes=["split-heads"], count=False)
    after = summarize(ane_report(convert_for_ane(rewritten, x)))
    assert before.get("rank>4", 0) > 0
    assert after.get("rank>4", 0) == 0 and after.get("off-ane", 0) == 0


def test_hand_built_program_rules():
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8, 8)), mb.TensorSpec(shape=(3,), dtype=types.int32)])
    def prog(x, idx):
        y = mb.conv(x=x, weight=torch.randn(4, 4, 3, 3).numpy(), dilations=[2, 2], pad_type="same", name="dil")
        g = mb.gather(x=y, indices=idx, axis=1, name="pick")
        r = mb.reshape(x=g, shape=[1, 3, 2, 4, 8], name="to5d")
        return mb.reduce_sum(x=r, axes=[2], name="sum")

    findings = ane_report(prog, module_map={"dil": "stem.conv", "pick": "head.gather"})
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


def test_saved_package_is_read_back(tmp_path):
    ml = convert_for_ane(Net().eval(), torch.randn(1, 8, 16))
    path = tmp_path / "net.mlpackage"
    ml.save(str(path))
    loaded = ct.models.MLModel(str(path), skip_model_load=True)
    again = ane_report(loaded)
    assert summarize(again).get("rank>4") == summarize(ane_report(ml)).get("rank>4")


def test_module_map_from_exported_program_and_render(capsys):
    ep = torch.export.export(Net().eval(), (torch.randn(1, 8, 16),))
    mapping = module_map_from_exported_program(ep)
    assert mapping["linear"] == "embed" and "blocks.0" in mapping.values()
    from rich.console import Console

    con = Console(width=200, record=True)
    render_ane_report(ane_report(convert_for_ane(Net().eval(), torch.randn(1, 8, 16))), console=con)
    text = con.export_text()
    assert "rank>4" in text and "blocks.0" in text and "machinelearning.apple.com" in text


def test_report_for_model_name_before_and_after_rewrite():
    from hybridexport.analyze.ane_rules import ane_report_for_model

    before = ane_report_for_model("mobilevit-xxs", resolution=64)
    flagged = {f.module for f in before if f.rule == "rank>4"}
    assert "stages.2.1.transformer.0.attn" in flagged
    after = ane_report_for_model("mobilevit-xxs", resolution=64, rewrite=True)
    assert not [f for f in after if f.severity == "off-ane"]
