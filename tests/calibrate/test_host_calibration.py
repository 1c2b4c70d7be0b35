"""Host latency model: ONNX features that follow ONNX Runtime's fusions, per-node measurements mapped to
features, and a host calibration fitted on totals and per-layer shares (real exports and real timings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hybridexport.calibrate.fit import MEASURED, device_spec, fit_dataset
from hybridexport.calibrate.host_layers import GROUPS, LayerTargets, exported_node_ms, op_groups
from hybridexport.latency.costmodel import Design, DeviceSpec, prior_theta
from hybridexport.latency.features import FeatureTable
from hybridexport.optable import OpRow, OpTable


class Blocks(nn.Module):
    """conv→SiLU, conv→GELU, conv→ReLU, a depthwise conv, a depthwise conv with channel multiplier 2, then
    linear→ReLU on tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dw2 = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.silu(self.c1(x))
        x = nn.functional.gelu(self.c2(x))
        x = torch.relu(self.c3(x))
        x = self.dw2(self.dw(x)).flatten(2).transpose(1, 2)
        return torch.relu(self.fc(x))


@pytest.fixture(scope="module")
def blocks_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[OpRow], Path]:
    from hybridexport.export import convert

    from models import loaded

    torch.set_num_threads(1)
    [m] = convert(loaded(Blocks(), name="blocks"), to="onnx", out=tmp_path_factory.mktemp("onnx"), rewrite=False,
                  verify_inputs=1)
    return OpTable.load(m.op_table_path()).ops, Path(m.path)


def test_onnx_features_follow_onnx_runtime_fusions(blocks_onnx: tuple[list[OpRow], Path]) -> None:
    ops, _ = blocks_onnx
    by_type: dict[str, list[OpRow]] = {}
    for o in ops:
        by_type.setdefault(o.op_type, []).append(o)
    # SiLU = Sigmoid + Mul: one kernel in ORT (QuickGelu); the Mul carries it and reads x only
    (sig,) = by_type["Sigmoid"]
    gate = next(o for o in by_type["Mul"] if sig.name in o.inputs)
    assert sig.fusable and gate.kind == "act_complex" and gate.in_elems == 8 * 16 * 16
    # ORT fuses ReLU into its Conv (FusedConv) but runs GELU, and a ReLU after a token MatMul, on their own
    conv_relu, fc_relu = by_type["Relu"]
    assert conv_relu.fusable and not fc_relu.fusable
    gelus = [o for o in ops if o.op_type in ("Gelu", "Erf")]
    assert gelus and not any(o.fusable for o in gelus)
    convs = by_type["Conv"]
    assert [o.kind for o in convs] == ["conv_kxk", "conv_pw", "conv_pw", "conv_dw", "conv_group"]


def test_cpu_reshape_is_a_view_but_not_on_the_ane() -> None:
    ops = [
        OpRow("a", "conv", "conv_pw", macs=1000, in_elems=512, out_elems=512, last_dim=8),
        OpRow("r", "reshape", "relayout", in_elems=512, out_elems=512, last_dim=64, inputs=["a"]),
    ]
    table = FeatureTable(model="t", format="onnx", resolution=8, ops=ops)
    cpu = DeviceSpec("h", "onnx", "cpu", "fp32", 1e11, 1e11, 1e10)
    ane = DeviceSpec("i", "coreml", "ane", "fp16", 1e12, 1e11, 1e10)
    assert Design([table], cpu).view.tolist() == [False, True]
    assert Design([table], ane).view.tolist() == [False, False]


def test_exported_node_ms_maps_kernels_to_exported_nodes(blocks_onnx: tuple[list[OpRow], Path]) -> None:
    ops, path = blocks_onnx
    ms = exported_node_ms(path, runs=5, warmup=2)
    names = {o.name for o in ops}
    assert ms and set(ms) <= names
    convs = [o.name for o in ops if o.op_type == "Conv"]
    assert sum(ms.get(c, 0.0) for c in convs) > 0
    assert all(v >= 0 for v in ms.values())


def test_layer_targets_compare_group_shares() -> None:
    """Shares equal to the measured ones give zero residuals; a held-out model's cells are not compared."""
    ops = [
        OpRow("c", "Conv", "conv_pw", macs=10**6, in_elems=4096, out_elems=4096, last_dim=8),
        OpRow("r", "Relu", "activation", in_elems=4096, out_elems=4096, fusable=True, inputs=["c"]),
        OpRow("t", "Transpose", "transpose", in_elems=4096, out_elems=4096, last_dim=8, inputs=["r"]),
        OpRow("s", "Softmax", "softmax", in_elems=4096, out_elems=4096, last_dim=8, inputs=["t"]),
    ]
    tables = [FeatureTable(model=f"m{i}", format="onnx", resolution=8, ops=ops) for i in range(2)]
    design = Design(tables, device_spec("host"))
    groups = op_groups(tables, design)
    assert [GROUPS[g] for g in groups[:4]] == ["conv_pw", "conv_pw", "relayout", "complex"]
    per_op = design.op_times(prior_theta(design.spec))
    node_ms = [{o.name: float(v) * 1e3 for o, v in zip(ops, per_op[i * 4:(i + 1) * 4], strict=True)}
               for i in range(2)]
    targets = LayerTargets(design, tables, node_ms)
    assert targets.count == 6 and np.allclose(targets.residuals(per_op), 0.0)
    skewed = per_op.copy()
    skewed[2] *= 3  # model 0's transpose
    assert np.abs(targets.residuals(skewed)).max() > 0.1
    only_second = targets.restrict(np.array([1]))
    assert only_second.count == 3 and np.allclose(only_second.residuals(skewed), 0.0)


def test_host_calibration_on_measured_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measure five tiny models here (totals + per-node), fit, and check the fit explains them."""
    from hybridexport.calibrate.host import host_dataset

    monkeypatch.setenv("HYBRIDEXPORT_CACHE", str(tmp_path))
    names = ["timm:lcnet_035", "timm:lcnet_050", "timm:mobilenetv3_small_050", "timm:mobilenetv2_035",
             "timm:tinynet_e"]
    ds = host_dataset(names, progress=False, rounds=1, runs=5, timer="cpu")
    assert ds.label == names and len(ds.node_ms) == len(ds.tables) == 5
    for t, ms in zip(ds.tables, ds.node_ms, strict=True):
        names_t = {o.name for o in t.ops}
        assert set(ms) <= names_t and sum(ms.values()) > 0
    model = fit_dataset(ds, device_spec("host"), MEASURED)
    assert model["fit"]["n"] == 5 and model["fit"]["mape"] < 25.0
    assert model["heldout"]["method"] == "leave-one-family-out"
    assert model["layers"]["groups_compared"] >= 10
    again = fit_dataset(ds, device_spec("host"), MEASURED)
    assert again["params"] == model["params"]  # deterministic

