"""``analyze(loaded_model)``: params (built and BN-folded), MACs, peak activations, stages, op histogram."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hybridexport.analyze.macs import MACS_CONVENTION, count_macs, family_extra_macs
from hybridexport.analyze.memory import peak_activation
from hybridexport.analyze.ops import count_ops, export_program
from hybridexport.analyze.params import count_params, fold_report
from hybridexport.analyze.stages import stage_paths
from hybridexport.zoo import LoadedModel

PAPER_KEYS = ("resolution", "params_m", "gmacs", "gmacs_code", "gmacs_note", "top1", "top1_note", "latency_ms_iphone13")


@dataclass
class StageRow:
    name: str
    params: int
    params_fused: int
    macs: int
    output_shape: list[int] | None


@dataclass
class ModelAnalysis:
    """Everything ``hybridexport info`` reports; ``to_dict()`` is its JSON form."""

    name: str
    family: str
    source: str
    resolution: int
    input_shape: list[int]  # the first input's
    input_shapes: list[list[int]]
    checkpoint: str | None
    params: int
    params_fused: int
    macs: int
    macs_convention: str
    peak_activation_bytes: int
    peak_activation_node: str
    peak_activation_module: str
    ops: dict[str, int]  # raw op name → count
    op_categories: dict[str, int]
    rank5_tensors: int
    total_ops: int
    bn_folded: int
    bn_unfolded: int
    stages: list[StageRow] = field(default_factory=list)
    paper: dict[str, Any] = field(default_factory=dict)
    macs_paper_convention: int | None = None  # family-specific count matching the paper's MAdds, if any
    macs_paper_convention_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device(module: torch.nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def analyze(loaded: LoadedModel, on_step: Callable[[str], None] | None = None) -> ModelAnalysis:
    """Analyse ``loaded`` at its resolution. Works on a module built on the ``meta`` device too."""
    step = on_step or (lambda _msg: None)
    module = loaded.module.eval()
    dev = _device(module)
    xs = tuple(x.to(dev) for x in loaded.example_inputs())
    x = xs if len(xs) > 1 else xs[0]
    params = count_params(module)
    paths = stage_paths(module)

    step("counting MACs")
    macs = count_macs(module, x, watch=paths)
    extra = family_extra_macs(loaded.spec.family, module, xs[0])

    step("tracing with torch.export")
    ep = export_program(module, x)
    step("analysing the graph")
    ops = count_ops(ep.graph)
    fold = fold_report(ep, params)
    peak = peak_activation(ep)

    named = dict(module.named_modules())
    stages = []
    for path in paths:
        sub = count_params(named[path])
        delta = sum(v for k, v in fold.by_module.items() if k == path or k.startswith(path + "."))
        stages.append(StageRow(path, sub, sub + delta, macs.by_module.get(path, 0), macs.output_shapes.get(path)))
    rest_macs = macs.total - sum(s.macs for s in stages)
    rest_params = params - sum(s.params for s in stages)
    if rest_macs or rest_params:
        rest_fused = fold.params_fused - sum(s.params_fused for s in stages)
        stages.append(StageRow("(rest)", rest_params, rest_fused, rest_macs, None))

    card = loaded.spec.card
    return ModelAnalysis(
        name=loaded.name,
        family=loaded.spec.family,
        source=loaded.spec.source,
        resolution=loaded.resolution,
        input_shape=list(loaded.input_shape),
        input_shapes=[list(s) for s in loaded.input_shapes],
        checkpoint=loaded.checkpoint,
        params=params,
        params_fused=fold.params_fused,
        macs=macs.total,
        macs_convention=MACS_CONVENTION,
        peak_activation_bytes=peak.bytes,
        peak_activation_node=peak.node,
        peak_activation_module=peak.module,
        ops={k: v for k, v in ops["aten"].items()},
        op_categories={k: v for k, v in ops.items() if k not in ("aten", "rank5_tensors", "total")},
        rank5_tensors=ops["rank5_tensors"],
        total_ops=ops["total"],
        bn_folded=fold.folded_bn,
        bn_unfolded=fold.unfolded_bn,
        stages=stages,
        paper={k: card[k] for k in PAPER_KEYS if k in card},
        macs_paper_convention=macs.total + extra[0] if extra else None,
        macs_paper_convention_note=extra[1] if extra else None,
    )
