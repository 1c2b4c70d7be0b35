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
    """(manifest, op table, MIL program) of PlacementNet as ``hybridexport convert`` writes it into ``out``."""
    from hybridexport.export import convert
    from hybridexport.export.formats.coreml import load_program
    from hybridexport.optable import OpTable
    from hybridexport.zoo import LoadedModel, ModelSpec

    spec = ModelSpec(name="placementnet", family="test", variant="placementnet", resolution=16, source="tests")
    [manifest] = convert(LoadedModel(spec=spec, module=build(), resolution=16), to="coreml", out=out.parent,
                         coreml_target=target, rewrite=False, verify_inputs=0)
    return manifest, OpTable.load(manifest.op_table_path()), load_program(manifest.path)


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
