"""Calibration reads exactly the op table that a user's ``convert --passes reparameterize`` writes."""

from __future__ import annotations

import pytest

from hybridexport.calibrate.build import deploy_artifact, deploy_table, loaded_model
from hybridexport.export import convert
from hybridexport.optable import OpTable

MODEL = "timm:lcnet_035"


@pytest.mark.parametrize("fmt", ["coreml", "onnx"])
def test_calibration_op_table_equals_the_one_convert_writes(tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("HYBRIDEXPORT_CACHE", str(tmp_path / "cache"))
    used = deploy_table(MODEL, fmt, resolution=128)
    [mine] = convert(MODEL, to=fmt, resolution=128, passes=["reparameterize"], out=tmp_path / "user",
                     keep_mismatch=True)  # untrained lcnet_035's fp16 activations underflow; the graph is the point
    written = OpTable.load(mine.op_table_path())
    assert [o.to_dict() for o in used.ops] == [o.to_dict() for o in written.ops]
    again = deploy_artifact(MODEL, fmt, resolution=128)  # cached: reused, not converted again
    assert again.extra["reused"] and again.passes == ["reparameterize"] or again.passes == []


def test_builders_beyond_the_zoo_and_backbones():
    tv = loaded_model("tv:shufflenet_v2_x0_5")
    assert tv.name == "tv:shufflenet_v2_x0_5" and tv.input_shapes == [(1, 3, 224, 224)]
    gen = loaded_model("timmgen:mobilenetv2:0.5", resolution=160)
    assert gen.resolution == 160 and sum(p.numel() for p in gen.module.parameters()) > 0
    bb = loaded_model("timm:lcnet_035", backbone=True)
    assert bb.name == "timm:lcnet_035-backbone" and bb.module.num_classes == 0
