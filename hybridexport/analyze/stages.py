"""Split a network into the coarse parts a per-stage table shows.

Rule (works for timm and for hybridexport's own models): the top-level children in definition
order; a child named like a container of stages (``stages``, ``features``, ``layers``, ``blocks``)
with more than one child is expanded one level (``stages.0`` …).
Parameter-free children without compute (dropout, identity, pooling) are kept; the table shows them
with zeros, so every MAC and parameter of the model lands in exactly one row.
"""

from __future__ import annotations

from torch import nn

CONTAINER_NAMES = ("stages", "features", "layers", "blocks", "stage", "body")


def stage_paths(module: nn.Module) -> list[str]:
    """Module paths of the stages, in order."""
    paths: list[str] = []
    for name, child in module.named_children():
        kids = list(child.named_children())
        if name in CONTAINER_NAMES and len(kids) > 1:
            paths.extend(f"{name}.{kid}" for kid, _ in kids)
        else:
            paths.append(name)
    return paths
