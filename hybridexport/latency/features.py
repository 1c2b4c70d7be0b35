"""Feature tables: the op-table rows of one model as the cost model reads them, and their compact form.

The cost model reads these fields of each :class:`~hybridexport.optable.OpRow`: ``kind``, ``macs``,
element counts (the device's precision turns them into bytes), ``rank``/``erank``/``max_dim``/``last_dim``,
``fusable`` and ``inputs`` (graph connectivity). Fallback to a slower unit is decided per device from
these fields (``fallback.py``). The compact form (no names, modules or shapes) is what the committed
calibration cache stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybridexport.optable import OpRow

# Column order of the compact table (data files and in-memory arrays).
# ``src``: indices of the ops producing this op's activation inputs (graph connectivity).
COLUMNS = ("kind", "op_type", "macs", "w_elems", "in_elems", "out_elems", "rank", "erank", "max_dim", "last_dim",
           "fusable", "src")


def compact_row(op: OpRow, index_of: dict[str, int]) -> list[Any]:
    # producers sorted: the graph formats do not fix the order of an op's named inputs
    extra = {"fusable": int(op.fusable), "src": sorted(index_of[i] for i in op.inputs if i in index_of)}
    return [extra[c] if c in extra else getattr(op, c) for c in COLUMNS]


@dataclass
class FeatureTable:
    """All ops of one exported model (one format, one input size)."""

    model: str  # builder id, e.g. "timm:repvit_m1_5" or "iformer-m"
    format: str  # "coreml" | "tflite" | "onnx"
    resolution: int
    ops: list[OpRow]
    backbone: bool = False  # classifier head removed

    @property
    def key(self) -> str:
        return feature_key(self.model, self.format, self.resolution, self.backbone)

    def totals(self) -> dict[str, int]:
        return {
            "ops": len(self.ops),
            "macs": sum(o.macs for o in self.ops),
            "w_elems": sum(o.w_elems for o in self.ops),
            "act_elems": sum(o.in_elems + o.out_elems for o in self.ops),
        }

    def to_compact(self) -> dict[str, Any]:
        """A small JSON-able form (no names/modules): what the committed data file stores."""
        index_of = {o.name: i for i, o in enumerate(self.ops)}
        return {"model": self.model, "format": self.format, "resolution": self.resolution, "backbone": self.backbone,
                "rows": [compact_row(o, index_of) for o in self.ops]}

    @classmethod
    def from_compact(cls, d: dict[str, Any]) -> FeatureTable:
        ops = []
        for i, r in enumerate(d["rows"]):
            kw = dict(zip(COLUMNS, r, strict=True))
            kw["fusable"] = bool(kw["fusable"])
            kw["inputs"] = [f"op{j}" for j in kw.pop("src")]
            ops.append(OpRow(name=f"op{i}", **kw))
        return cls(model=d["model"], format=d["format"], resolution=int(d["resolution"]), ops=ops,
                   backbone=bool(d.get("backbone", False)))


def feature_key(model: str, fmt: str, resolution: int, backbone: bool = False) -> str:
    return f"{fmt}|{model}|{resolution}" + ("|backbone" if backbone else "")
