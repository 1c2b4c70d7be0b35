"""Multiply-accumulate counts in the fvcore convention the papers use.

Convention (``MACS_CONVENTION``): one MAC per multiply-accumulate of convolutions, linear layers
and matrix products (``mm``/``addmm``/``bmm``/``baddbmm``, attention's ``Q·Kᵀ`` and ``A·V``, also
inside ``scaled_dot_product_attention``). Biases, normalisation, activations, softmax, pooling and
other elementwise work count zero. Counted with ``torch.utils.flop_counter.FlopCounterMode``, whose
FLOPs for these ops are exactly 2 × MACs, so MACs = FLOPs / 2. This reproduces fvcore's
``FlopCountAnalysis(...).total()`` that iFormer's ``flops.py`` prints (iFormer-M 1.640 G).

Mobile-Former's paper counts more (its MAdds are 2–10 % above this count, most for the smallest
variants): :func:`family_extra_macs` returns the family's extra term (dynamic-ReLU elementwise work,
computed by ``hybridexport.zoo.mobileformer.elementwise_macs``), reported separately as the count in
the paper's convention.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

MACS_CONVENTION = (
    "fvcore: 1 per multiply-accumulate of conv, linear and matmul/attention ops (torch FlopCounterMode "
    "FLOPs / 2); elementwise ops, norms, activations, softmax and pooling not counted"
)


def _cpu_sdpa_flop(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS: dict[Any, Any] = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flop


@dataclass
class MacCount:
    """Total MACs and MACs per module path (``''`` is the whole model)."""

    total: int
    by_module: dict[str, int] = field(default_factory=dict)
    output_shapes: dict[str, list[int]] = field(default_factory=dict)


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        return next((t for t in map(_first_tensor, obj) if t is not None), None)
    if isinstance(obj, dict):
        return next((t for t in map(_first_tensor, obj.values()) if t is not None), None)
    return None


def count_macs(module: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...],
               watch: Iterable[str] = ()) -> MacCount:
    """Run ``module`` once (on one input, or a tuple of them) under FlopCounterMode; record output shapes
    of the ``watch`` module paths."""
    shapes: dict[str, list[int]] = {}
    handles = []
    named = dict(module.named_modules())
    for path in watch:
        def hook(_m: nn.Module, _i: Any, out: Any, path: str = path) -> None:
            t = _first_tensor(out)
            if t is not None:
                shapes[path] = list(t.shape)

        if path in named:
            handles.append(named[path].register_forward_hook(hook))
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    try:
        with counter, torch.no_grad():
            module(*(example_input if isinstance(example_input, tuple) else (example_input,)))
    finally:
        for h in handles:
            h.remove()
    by_module: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        flops = sum(ops.values())
        if name == "Global":
            continue
        # ModuleTracker names are "<RootClass>.<path>"; the root itself is "<RootClass>".
        path = name.split(".", 1)[1] if "." in name else ""
        by_module[path] = by_module.get(path, 0) + flops // 2
    return MacCount(total=counter.get_total_flops() // 2, by_module=by_module, output_shapes=shapes)


def family_extra_macs(family: str, module: nn.Module, example_input: torch.Tensor) -> tuple[int, str] | None:
    """The family's MAdds beyond :data:`MACS_CONVENTION` and the card's rule for them, if it has one.

    Only Mobile-Former has one: ``hybridexport.zoo.mobileformer.elementwise_macs`` (3 per dynamic-ReLU
    output element, the rule in ``models/mobileformer.toml`` ``macs_convention``).
    """
    if family != "mobileformer":
        return None
    from hybridexport.zoo import mobileformer
    from hybridexport.zoo.cards import load_cards

    extra = mobileformer.elementwise_macs(module, resolution=int(example_input.shape[-1]))
    note = str(load_cards()["mobileformer"].get("macs_convention", "see models/mobileformer.toml"))
    return int(extra), note
