"""Parameter counts as built and with BatchNorm folded, computed from the exported graph.

Papers of mobile networks publish the *deployed* count: every BatchNorm folded into its neighbouring
conv/linear (iFormer's ``flops.py`` counts after ``replace_batchnorm``). Folding rules, applied to the
``torch.export`` graph without touching weights:

* BN after a conv/linear whose output has no other user: the BN's weight and bias disappear; the
  conv/linear gains a bias (out channels) if it had none.
* BN whose only user is a linear, or a conv without padding (iFormer's ``NormLinear`` head): folded
  forward into that layer, same accounting.
* Two linears on the same (BN-folded) input whose outputs are added (a distillation head averaged at
  inference, as iFormer's ``fuse`` does) merge into one: the second linear's weights disappear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.export.graph_signature import InputKind

from hybridexport import modpath
from hybridexport.analyze.ops import op_name

BN_OPS = frozenset({
    "aten.batch_norm", "aten._native_batch_norm_legit_no_training", "aten._native_batch_norm_legit",
    "aten.native_batch_norm", "aten.cudnn_batch_norm",
})
CONV_OPS = frozenset({"aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution", "aten._convolution"})
LINEAR_OPS = frozenset({"aten.linear"})


@dataclass
class FoldReport:
    """What folding removes: ``params_fused = params - removed + added``."""

    params: int
    removed: int = 0
    added: int = 0
    folded_bn: int = 0
    unfolded_bn: int = 0
    merged_linear: int = 0
    by_module: dict[str, int] = field(default_factory=dict)  # module path → net change (negative)

    @property
    def params_fused(self) -> int:
        return self.params - self.removed + self.added


def count_params(module: nn.Module) -> int:
    """Unique parameters of ``module`` (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def _param_numel(ep: torch.export.ExportedProgram) -> dict[str, int]:
    """Placeholder name → numel for parameter placeholders."""
    state = ep.state_dict
    return {
        spec.arg.name: state[spec.target].numel()
        for spec in ep.graph_signature.input_specs
        if spec.kind == InputKind.PARAMETER and spec.target in state
    }


def _arg(node: torch.fx.Node, index: int, name: str) -> object:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name)


def _zero_padding(conv: torch.fx.Node) -> bool:
    if op_name(conv.target) not in CONV_OPS:
        return True
    padding = _arg(conv, 4, "padding")
    if padding is None:
        return True
    if isinstance(padding, str):
        return padding == "valid"
    return all(int(p) == 0 for p in (padding if isinstance(padding, (list, tuple)) else [padding]))


def _output0(node: torch.fx.Node) -> torch.fx.Node | None:
    """The node carrying a BN's normalised output (the op itself, or ``getitem(op, 0)`` for tuple ops)."""
    if not isinstance(node.meta.get("val"), (list, tuple)):
        return node
    return next((u for u in node.users if op_name(u.target) == "getitem" and u.args[1] == 0), None)


def fold_report(ep: torch.export.ExportedProgram, params: int) -> FoldReport:
    """Apply the folding rules of the module docstring to ``ep``; ``params`` is the as-built count."""
    numel = _param_numel(ep)
    report = FoldReport(params=params)
    folded_into: dict[torch.fx.Node, torch.fx.Node] = {}  # layer → the BN input it effectively reads

    def size(arg: object) -> int:
        return numel.get(arg.name, 0) if isinstance(arg, torch.fx.Node) else 0

    added_bias: dict[torch.fx.Node, int] = {}

    def fold(bn: torch.fx.Node, layer: torch.fx.Node) -> None:
        removed = size(_arg(bn, 1, "weight")) + size(_arg(bn, 2, "bias"))
        added = 0
        if _arg(layer, 2, "bias") is None and layer not in added_bias:
            weight = _arg(layer, 1, "weight")
            added = int(weight.meta["val"].shape[0]) if isinstance(weight, torch.fx.Node) else 0
            added_bias[layer] = added
        report.removed += removed
        report.added += added
        report.folded_bn += 1
        path = modpath.of_node(bn)
        report.by_module[path] = report.by_module.get(path, 0) - removed + added

    for bn in ep.graph.nodes:
        if bn.op != "call_function" or op_name(bn.target) not in BN_OPS:
            continue
        src, out = bn.args[0], _output0(bn)
        users = list(out.users) if out is not None else []
        if isinstance(src, torch.fx.Node) and op_name(src.target) in CONV_OPS | LINEAR_OPS and len(src.users) == 1:
            fold(bn, src)
        elif len(users) == 1 and op_name(users[0].target) in CONV_OPS | LINEAR_OPS and users[0].args[0] is out \
                and _zero_padding(users[0]):
            fold(bn, users[0])
            folded_into[users[0]] = src
        else:
            report.unfolded_bn += 1

    for add in ep.graph.nodes:
        if add.op != "call_function" or op_name(add.target) != "aten.add" or len(add.args) < 2:
            continue
        a, b = add.args[:2]
        if not all(isinstance(n, torch.fx.Node) and op_name(n.target) in LINEAR_OPS and len(n.users) == 1
                   for n in (a, b)):
            continue
        if folded_into.get(a, a.args[0]) is not folded_into.get(b, b.args[0]):
            continue
        if a.args[1].meta["val"].shape != b.args[1].meta["val"].shape:
            continue
        removed = size(b.args[1]) + size(_arg(b, 2, "bias"))
        report.removed += removed
        report.added -= added_bias.pop(b, 0)
        report.merged_linear += 1
        path = modpath.of_node(b)
        report.by_module[path] = report.by_module.get(path, 0) - removed
    return report
