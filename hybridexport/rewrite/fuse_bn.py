"""``fuse-bn``: fold eval-mode BatchNorm into the convolution or linear layer next to it."""

from __future__ import annotations

from collections import Counter, OrderedDict

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from hybridexport.rewrite._graph import (
    GraphCache,
    TracedModel,
    real_users,
    set_submodule,
    tensor_input,
    tensor_rank,
)
from hybridexport.rewrite.base import PassOutcome, RewritePass, count_phrase, module_type_name, register_pass

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def bn_scale_shift(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm in eval as ``y = x·s + t`` per channel (float64)."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    s = gamma / torch.sqrt(var + bn.eps)
    return s, beta - mean * s


def _set_weight_bias(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    dtype = layer.weight.dtype
    layer.weight.data = weight.to(dtype).contiguous()
    if layer.bias is None:
        layer.bias = nn.Parameter(bias.to(dtype), requires_grad=layer.weight.requires_grad)
    else:
        layer.bias.data = bias.to(dtype)


@torch.no_grad()
def fold_into_preceding(layer: nn.Module, bn: _BatchNorm) -> None:
    """``bn(layer(x))`` → ``layer'(x)``: scale output channels (dim 0 of the weight), shift the bias."""
    s, t = bn_scale_shift(bn)
    w = layer.weight.double()
    b = layer.bias.double() if layer.bias is not None else torch.zeros_like(s)
    _set_weight_bias(layer, w * s.view((-1,) + (1,) * (w.dim() - 1)), b * s + t)


@torch.no_grad()
def fold_into_following(layer: nn.Module, bn: _BatchNorm) -> None:
    """``layer(bn(x))`` → ``layer'(x)``: scale input channels, add the weight-summed shift to the bias.

    Exact for linear layers and for convolutions without padding (zero padding would see the shift).
    """
    s, t = bn_scale_shift(bn)
    w = layer.weight.double()
    b = layer.bias.double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if isinstance(layer, nn.Linear):
        _set_weight_bias(layer, w * s[None, :], b + w @ t)
        return
    groups = layer.groups
    out_ch, in_per_group = w.shape[0], w.shape[1]
    group_of_out = torch.arange(out_ch) // (out_ch // groups)
    s_o = s.view(groups, in_per_group)[group_of_out]  # [out, in/groups]
    t_o = t.view(groups, in_per_group)[group_of_out]
    extra = (1,) * (w.dim() - 2)
    new_b = b + (w * t_o.view(out_ch, in_per_group, *extra)).flatten(1).sum(1)
    _set_weight_bias(layer, w * s_o.view(out_ch, in_per_group, *extra), new_b)


def bn_replacement(bn: _BatchNorm) -> nn.Module:
    """What is left of a folded BatchNorm: Identity, or the activation of timm's ``BatchNormAct2d``."""
    act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
    if isinstance(act, nn.Module):
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        if isinstance(drop, nn.Module):
            parts["drop"] = drop
        parts["act"] = act
        return nn.Sequential(parts)
    return nn.Identity()


def _foldable_bn(bn: nn.Module) -> bool:
    return (
        isinstance(bn, _BatchNorm)
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
    )


def _is_plain_layer(m: nn.Module) -> bool:
    if isinstance(m, _CONVS):
        return not getattr(m, "transposed", False)
    return isinstance(m, nn.Linear)


def _input_is(node: fx.Node, producer: fx.Node) -> bool:
    arg = tensor_input(node)
    if arg is producer:
        return True
    return arg is not None and getattr(arg.target, "__name__", "") == "getitem" and arg.args[0] is producer


def find_pairs_in_graph(model: nn.Module, traced: TracedModel) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``[(direction, layer_path, bn_path)]`` where direction is "pre" (layer→BN) or "post" (BN→layer),
    plus the paths of BatchNorms called in forward that have nothing to fold into."""
    pairs: list[tuple[str, str, str]] = []
    kept: list[str] = []
    seen: set[str] = set()
    for node in traced.graph.nodes:
        if node not in traced.owner or traced.kind(node) != "batch_norm":
            continue
        bn_path = traced.owner[node]
        bn = _get(model, bn_path)
        if bn_path in seen or not _foldable_bn(bn) or traced.calls[(bn_path, "batch_norm")] != 1:
            if bn_path not in seen and isinstance(bn, _BatchNorm):
                kept.append(bn_path)
            seen.add(bn_path)
            continue
        seen.add(bn_path)
        prev = tensor_input(node)
        if prev is not None and prev in traced.owner and traced.kind(prev) in ("conv", "linear"):
            layer_path = traced.owner[prev]
            layer = _get(model, layer_path)
            if (
                layer is not None
                and _is_plain_layer(layer)
                and traced.calls[(layer_path, traced.kind(prev))] == 1
                and len(real_users(prev)) == 1
                and (isinstance(layer, _CONVS) or tensor_rank(prev) == 2)
            ):
                pairs.append(("pre", layer_path, bn_path))
                continue
        users = real_users(node)
        if len(users) == 1 and users[0] in traced.owner and traced.kind(users[0]) in ("conv", "linear"):
            nxt = users[0]
            layer_path = traced.owner[nxt]
            layer = _get(model, layer_path)
            if (
                layer is not None
                and _is_plain_layer(layer)
                and _input_is(nxt, node)
                and traced.calls[(layer_path, traced.kind(nxt))] == 1
                and (isinstance(layer, nn.Linear) and tensor_rank(nxt) == 2 or _unpadded_conv(layer))
            ):
                pairs.append(("post", layer_path, bn_path))
                continue
        kept.append(bn_path)
    return pairs, kept


def _unpadded_conv(layer: nn.Module) -> bool:
    if not isinstance(layer, _CONVS) or isinstance(layer.padding, str) and layer.padding != "valid":
        return False
    return isinstance(layer.padding, str) or all(p == 0 for p in layer.padding)


def find_pairs_in_sequentials(model: nn.Module) -> list[tuple[str, str, str]]:
    """Fallback when the model cannot be exported: conv/linear immediately followed by BN in a Sequential."""
    pairs = []
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        names = list(mod._modules)
        for a, b in zip(names, names[1:]):
            if _is_plain_layer(mod._modules[a]) and _foldable_bn(mod._modules[b]):
                prefix = f"{path}." if path else ""
                pairs.append(("pre", prefix + a, prefix + b))
    return pairs


def _get(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


@register_pass
class FuseBatchNorm(RewritePass):
    """Fold eval-mode BatchNorm into the adjacent convolution or linear layer.

    Before::

        x ─ Conv2d(W, b) ─ BatchNorm2d(γ, β, μ, σ²) ─ y          (also Linear → BatchNorm1d)
    After::

        x ─ Conv2d(W·s, (b − μ)·s + β) ─ Identity ─ y           s = γ / √(σ² + ε)

    A BatchNorm whose input is not a single-use conv/linear output is folded forward into the layer it
    feeds when that is exact (a linear layer, or a convolution without padding: iFormer's BN1d → Linear
    head). timm's ``BatchNormAct2d`` keeps its activation. Pairs are found on a graph of the model (data
    flow, single use, one call per module), not by module names: the ``torch.fx`` symbolic trace, else
    (code fx cannot trace) the ``torch.export`` graph, else conv/BN neighbours inside ``nn.Sequential``.
    Any other BatchNorm stays as it is (an eval BatchNorm is already a per-channel affine in every
    runtime) and the report names it.
    """

    name = "fuse-bn"
    summary = "fold BatchNorm into the neighbouring conv/linear"

    def precheck(self, model: nn.Module) -> str:
        bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        if not bns:
            return "no BatchNorm in the model"
        if not any(_foldable_bn(m) for m in bns):
            return f"no eval-mode BatchNorm with running statistics ({len(bns)} BatchNorm)"
        return ""

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        all_bn = [p for p, m in model.named_modules() if isinstance(m, _BatchNorm)]
        if not all_bn:
            return PassOutcome(0, notes=["no BatchNorm in the model"])
        graphs = self.graphs or GraphCache(model, example)
        notes: list[str] = []
        try:
            pairs, kept = find_pairs_in_graph(model, graphs.fx_traced())
        except Exception as fx_exc:  # code fx cannot trace: the exported graph
            try:
                pairs, kept = find_pairs_in_graph(model, graphs.export_traced())
            except Exception as exc:  # not exportable either: structural fallback
                notes.append(f"fx tracing failed ({type(fx_exc).__name__}), torch.export failed "
                             f"({type(exc).__name__}); matched conv/BN neighbours in Sequentials only")
                pairs = find_pairs_in_sequentials(model)
                paired = {bn for _, _, bn in pairs}
                kept = [p for p in all_bn if p not in paired]
        pre: Counter[str] = Counter()
        post: Counter[str] = Counter()
        into_pre: Counter[str] = Counter()
        into_post: Counter[str] = Counter()
        for direction, layer_path, bn_path in pairs:
            layer, bn = model.get_submodule(layer_path), model.get_submodule(bn_path)
            if direction == "pre":
                fold_into_preceding(layer, bn)
                pre[module_type_name(bn)] += 1
                into_pre[module_type_name(layer)] += 1
            else:
                fold_into_following(layer, bn)
                post[module_type_name(bn)] += 1
                into_post[module_type_name(layer)] += 1
            set_submodule(model, bn_path, bn_replacement(bn))
        changes = []
        if pre:
            changes.append(count_phrase(pre, "folded", "into the preceding " + "/".join(sorted(into_pre))))
        if post:
            changes.append(count_phrase(post, "folded", "into the following " + "/".join(sorted(into_post))))
        unused = [p for p in all_bn if p not in {bn for _, _, bn in pairs} and p not in kept]
        if kept:
            kinds = Counter(module_type_name(_get(model, p)) for p in kept)
            notes.append(
                count_phrase(kinds, "kept", "as BatchNorm (no single-use conv/linear to fold into): ")
                + _short_list(kept)
            )
        if unused:
            notes.append(f"{len(unused)} BatchNorm never called in forward: {_short_list(unused)}")
        return PassOutcome(len(pairs), changes, notes)


def _short_list(paths: list[str], limit: int = 4) -> str:
    head = ", ".join(paths[:limit])
    return head + (f" … (+{len(paths) - limit})" if len(paths) > limit else "")
