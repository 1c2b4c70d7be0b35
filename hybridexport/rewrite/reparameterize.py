"""``reparameterize``: apply the model's own structural reparameterization (its deploy-time form)."""

from __future__ import annotations

import inspect
from collections import Counter

import torch
from torch import nn

from hybridexport.rewrite.base import PassOutcome, RewritePass, module_type_name, register_pass

#: method names models use for their inference-time form, in the order they are tried.
#: ``fuse()`` returns a replacement module (timm RepViT, iFormer, LeViT); the others work in place
#: (MobileOne/FastViT ``reparameterize()``, RepGhost/GhostNet ``switch_to_deploy()``).
METHODS = ("fuse", "reparameterize", "switch_to_deploy")


def _own_method(module: nn.Module) -> str | None:
    """The first of :data:`METHODS` the module defines and can call without arguments."""
    for name in METHODS:
        fn = getattr(module, name, None)
        if not callable(fn) or isinstance(fn, nn.Module):
            continue
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        if all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return name
    return None


@register_pass
class Reparameterize(RewritePass):
    """Call each submodule's own deploy-time reparameterization, top-down (like
    ``timm.utils.model.reparameterize_model``, but reporting what happened and surviving a failure).

    Before (MobileOne block, training form)::

        x ─┬─ Conv3x3+BN ─┐
           ├─ Conv1x1+BN ─┼─ + ─ act
           └─ BN ─────────┘
    After::

        x ─ Conv3x3 (reparam_conv) ─ act

    Generic: any child with ``fuse()`` (returns the replacement: RepViT, iFormer ConvNorm / RepCPE /
    classifier), ``reparameterize()`` or ``switch_to_deploy()`` (in place: MobileOne, FastViT, RepGhost).
    A method that raises leaves that submodule unchanged and is reported.
    """

    name = "reparameterize"
    summary = "apply the model's own deploy-time reparameterization"

    def precheck(self, model: nn.Module) -> str:
        if any(_own_method(m) for path, m in model.named_modules() if path):
            return ""
        return "no submodule provides fuse()/reparameterize()/switch_to_deploy()"

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        done: Counter[str] = Counter()
        failed: list[str] = []
        with torch.no_grad():
            self._walk(model, "", done, failed)
        changes = [
            f"{method}() on {n} {cls}" for (method, cls), n in sorted(_split(done).items(), key=lambda kv: -kv[1])
        ]
        notes = [f"left unchanged (method raised): {f}" for f in failed[:6]]
        if len(failed) > 6:
            notes.append(f"… and {len(failed) - 6} more")
        if not done:
            notes.insert(0, "no submodule provides fuse()/reparameterize()/switch_to_deploy()")
        return PassOutcome(sum(done.values()), changes, notes)

    def _walk(self, parent: nn.Module, prefix: str, done: Counter[str], failed: list[str]) -> None:
        for child_name, child in list(parent.named_children()):
            path = f"{prefix}{child_name}"
            method = _own_method(child)
            if method is not None:
                try:
                    result = getattr(child, method)()
                except Exception as exc:
                    failed.append(f"{path}.{method}(): {type(exc).__name__}: {exc}")
                else:
                    done[f"{method}\0{module_type_name(child)}"] += 1
                    if method == "fuse" and isinstance(result, nn.Module) and result is not child:
                        setattr(parent, child_name, result)
                        child = result
            self._walk(child, path + ".", done, failed)


def _split(done: Counter[str]) -> dict[tuple[str, str], int]:
    return {tuple(k.split("\0", 1)): v for k, v in done.items()}  # type: ignore[misc]
