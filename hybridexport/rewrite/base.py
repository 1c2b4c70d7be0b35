"""What a rewrite pass is, and the registry that names them.

A pass is a small class registered by name (the coremltools graph-pass pattern): its docstring shows the
pattern before and after; ``precheck`` says from module types alone (no copy, no trace) when it cannot
apply; ``apply`` rewrites a private copy of the model in place and says what it changed. Matching and
replacing are the pass's job; verifying and reporting are the pipeline's
(``hybridexport.rewrite.pipeline``), so that no pass can skip them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from hybridexport.errors import HybridExportError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.rewrite._graph import GraphCache


class UnknownPassError(HybridExportError):
    """A rewrite pass name that the registry does not know."""


@dataclass
class PassOutcome:
    """What one pass did to the model it was given.

    ``matched`` counts pattern instances found; 0 means the pass does not apply to this model.
    ``changes`` are short human sentences ("folded 42 BatchNorm2d into Conv2d"); ``notes`` say what
    was left alone and why.
    """

    matched: int = 0
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class RewritePass:
    """Base class: subclasses set ``name``/``summary``, implement ``apply`` and may refine ``precheck``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: opt-in passes run only when asked for by name (or by a target default).
    opt_in: ClassVar[bool] = False
    #: graphs of the model ``apply`` is given, shared between passes (set by the pipeline; None when the
    #: pass is applied on its own, then a pass that needs a graph makes its own)
    graphs: GraphCache | None = None

    def precheck(self, model: nn.Module) -> str:
        """Why the pass cannot apply to ``model``, decided cheaply (module types, no trace, no copy), or ""
        when it may apply. It must never say "cannot" for a model ``apply`` would change."""
        return ""

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:  # pragma: no cover - abstract
        """Rewrite ``model`` in place (the pipeline hands over a private copy) and say what changed."""
        raise NotImplementedError


PASSES: dict[str, type[RewritePass]] = {}

#: the order passes run in, whatever order they are asked for in: model-provided reparameterization
#: must see the BatchNorms it folds itself (MobileOne, RepViT, iFormer RepCPE read ``.bn`` attributes),
#: linear-to-conv works on the attention that split-heads produced, and attention-graph runs after
#: split-heads (the known classes keep their hand-written rewrite; the graph matcher takes the rest).
CANONICAL_ORDER = ("reparameterize", "fuse-bn", "group-norm-rank4", "unfold-as-conv", "window-partition-rank4",
                   "split-heads", "attention-graph", "linear-to-conv")


def register_pass(cls: type[RewritePass]) -> type[RewritePass]:
    """Class decorator: add a pass to :data:`PASSES` under its ``name``."""
    if not cls.name or cls.name in PASSES:
        raise ValueError(f"rewrite pass needs a unique name, got {cls.name!r}")
    PASSES[cls.name] = cls
    return cls


def load_passes() -> dict[str, type[RewritePass]]:
    """Import every pass module (each registers itself) and return the registry."""
    from hybridexport.rewrite import (  # noqa: F401  (imported for their registration side effect)
        fuse_bn,
        graph_attention,
        group_norm,
        linear_to_conv,
        reparameterize,
        split_heads,
        unfold_as_conv,
        window_partition,
    )

    return PASSES


def known_pass_names() -> list[str]:
    """Registered pass names, in the order they run."""
    names = list(load_passes())
    return sorted(names, key=lambda n: CANONICAL_ORDER.index(n) if n in CANONICAL_ORDER else len(CANONICAL_ORDER))


def get_pass(name: str) -> RewritePass:
    """An instance of the pass called ``name``; a one-line error listing the known ones otherwise."""
    passes = load_passes()
    if name not in passes:
        raise UnknownPassError(f"unknown rewrite pass '{name}'; known passes: {', '.join(known_pass_names())}")
    return passes[name]()


def count_phrase(counter: Counter[str], verb: str, into: str = "") -> str:
    """``Counter({'BatchNorm2d': 3})`` → ``"folded 3 BatchNorm2d"`` (+ ``into``)."""
    parts = [f"{n} {k}" for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"{verb} {', '.join(parts)}{(' ' + into) if into else ''}"


def module_type_name(module: object) -> str:
    """Class name of a module, for reports."""
    return type(module).__name__
