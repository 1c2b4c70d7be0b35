"""PlacementNet: a small model whose Core ML program has ops the static Neural Engine rules flag (rank-5 tensors).

``build_artifact(out)`` converts it as ``hybridexport convert --to coreml`` does (TorchScript trace,
ML Program, FP16, iOS15 unless told) and writes the package, its manifest and an op table (module
paths from the conversion's TorchScript scopes, findings from ``hybridexport.analyze.ane_rules``).

``python tests/data/apple/placement_net.py`` rewrites ``modelrunner_compute_plan_placementnet_synthesized.json``:
the real op output names of that conversion with made-up preferred devices and costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).parent
PLAN = HERE / "modelrunner_compute_plan_placementnet_synthesized.json"


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Groups(nn.Module):
    """Splits channels into two groups on a fifth axis (rank-5 tensors), weights and sums them."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 2).view(1, 2, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return (x.view(b, 2, c // 2, h, w) * self.scale).sum(1)


class PlacementNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem()
        self.groups = Groups()
        self.act = nn.GELU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.groups(self.stem(x)))
        return self.head(y.mean((2, 3))).softmax(-1)


def build() -> PlacementNet:
    torch.manual_seed(0)
    return PlacementNet().eval()


def example() -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def build_artifact(out: Path, target: str = "iOS15") -> tuple[Any, Any, Any]:
    """(manifest, op table, MIL program) of PlacementNet converted to ``out/placementnet.fp16.mlpackage``."""
    import coremltools as ct

    from hybridexport import modpath
    from hybridexport.analyze.ane_rules import ane_report, iter_ops
    from hybridexport.export.manifest import Manifest, Parity, manifest_path
    from hybridexport.optable import OpRow, OpTable, op_table_path

    module, x = build(), example()
    traced = torch.jit.trace(module, x, check_trace=False)
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=tuple(x.shape))], convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT16, compute_units=ct.ComputeUnit.ALL,
                         minimum_deployment_target=getattr(ct.target, target))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "placementnet.fp16.mlpackage"
    mlmodel.save(str(path))
    program = mlmodel._mil_program
    first = {op.name: op.outputs[0].name for op in iter_ops(program) if op.outputs}
    findings: dict[str, list[str]] = {}
    for f in ane_report(program):
        findings.setdefault(first.get(f.op_name, f.op_name), []).append(f"{f.severity}:{f.rule}")
    rows = []
    for op in iter_ops(program):
        if op.op_type == "const" or not op.outputs:
            continue
        name = op.outputs[0].name
        mod = modpath.from_mil_op(op)
        rows.append(OpRow(name=name, op_type=op.op_type, kind="", module=mod, module_source="scope" if mod else "",
                          findings=findings.get(name, [])))
    sha = "2" * 64
    table = OpTable(format="coreml", ops=rows, artifact_sha256=sha, module_mapping="TorchScript scopes of the conversion")
    table.save(op_table_path(path))
    manifest = Manifest(model="placementnet", resolution=16, format="coreml", precision="fp16", path=str(path),
                        size_bytes=0, sha256=sha, versions={}, passes=[], parity=Parity(verified=False), ops={},
                        rank5_tensors=0, seconds=0.0, extra={"coreml_target": target})
    from hybridexport.atomic import write_json

    write_json(manifest_path(path), manifest.to_dict())
    return manifest, table, program


# made-up placement: casts on the CPU, the rank-5 reshape on the Neural Engine (the rules say off), the
# rank-5 multiply on the CPU (the rules agree), softmax on the GPU; costs in proportion to the work
UNITS = {"cast": "cpu", "reshape": "ane", "mul": "cpu", "softmax": "gpu"}
COST = {"conv": 0.40, "relu": 0.05, "reshape": 0.08, "mul": 0.12, "reduce_sum": 0.10, "gelu": 0.08,
        "reduce_mean": 0.05, "linear": 0.06, "softmax": 0.02, "cast": 0.02}


def device(unit: str) -> dict[str, Any]:
    return {"neuralEngine": {"totalCoreCount": 16}} if unit == "ane" else {unit: {}}


def synthesized_plan(program: Any) -> dict[str, Any]:
    """ModelRunner's ComputePlan reply (``infos``) for every non-const op of ``program``."""
    from hybridexport.analyze.ane_rules import iter_ops

    ops = [op for op in iter_ops(program) if op.op_type != "const"]
    raw = {op.outputs[0].name: COST.get(op.op_type, 0.01) for op in ops}
    scale = 1.0 / sum(raw.values())
    infos = []
    for op in ops:
        unit = UNITS.get(op.op_type, "ane")
        supported = ["cpu", "gpu", "ane"] if op.op_type != "mul" else ["cpu", "gpu"]
        infos.append({
            "deviceUsage": {"preferred": device(unit), "supported": [device(u) for u in supported]},
            "estimatedCost": round(raw[op.outputs[0].name] * scale, 6),
            "path": {"components": [{"program": {}}, {"programFunction": {"data": {"name": "main"}}},
                                    {"programBlock": {"data": {"index": -1}}},
                                    {"programOperation": {"data": {"outputName": op.outputs[0].name}}}]},
        })
    return {"infos": infos}


if __name__ == "__main__":  # pragma: no cover - fixture script
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        _, _, prog = build_artifact(Path(td))
        PLAN.write_text(json.dumps(synthesized_plan(prog), indent=1) + "\n")
    print(f"wrote {PLAN}")
