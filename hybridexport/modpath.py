"""``nn.Module`` paths of graph nodes and runtime ops: the one parser for every format.

Conventions, the same for every format and runner:

* a path is dotted, as ``nn.Module.named_modules()`` spells it (``stages.1.blocks.0.attn``);
* ``ROOT`` (``"<root>"``) is the model itself: ops issued by the top-level ``forward``;
* ``UNMAPPED`` (``""``) means the op's module is not known.

Where a path comes from: ``torch.export``/FX nodes carry ``nn_module_stack``; the dynamo ONNX exporter
writes ``pkg.torch.onnx.name_scopes`` (or, older, ``namespace``) into node metadata; litert-torch names
tensors after the module hierarchy (``pkg.Net/pkg.Block_stem/torch.nn.modules.conv.Conv2d_conv``); a
TorchScript trace gives each node a ``scopeName()`` (coremltools records on each MIL op the TorchScript
value it came from, whose node that is).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ROOT = "<root>"
UNMAPPED = ""

#: how a row's module path was found (``LayerRow.module_source``, ``OpRow.module_source``)
SOURCES = ("metadata", "scope", "debug_handle", "alignment", "op_table", "inherited", "")


def clean_path(path: str) -> str:
    """A module path in ``named_modules()`` spelling: ``L['self'].stages[0]`` / ``L__self___stages_0``-free.

    ``""`` and ``L['self']`` (the root) become :data:`ROOT`.
    """
    p = str(path)
    p = re.sub(r"^L\['self'\]\.?", "", p)
    p = re.sub(r"\[(\d+)\]", r".\1", p)
    p = re.sub(r"\['([^']+)'\]", r".\1", p)
    p = p.removeprefix("__module.").replace("/__module.", "/")
    p = p.strip(".")
    return p or ROOT


def submodule_name(path: str) -> str:
    """The name ``nn.Module.get_submodule`` takes for ``path`` (``ROOT`` → ``""``)."""
    return "" if path in (ROOT, UNMAPPED) else path


def from_module_stack(stack: Mapping[str, Any] | None) -> str:
    """The innermost path of a ``torch.export`` ``nn_module_stack`` (values ``(path, class)``); ``""`` without one."""
    if not stack:
        return UNMAPPED
    last = list(stack.values())[-1]
    path = last[0] if isinstance(last, (tuple, list)) else str(last)
    return clean_path(path)


def class_of_stack(stack: Mapping[str, Any] | None) -> str:
    """Class name of the innermost module of an ``nn_module_stack`` (``""`` without one)."""
    if not stack:
        return ""
    last = list(stack.values())[-1]
    cls = last[1] if isinstance(last, (tuple, list)) and len(last) > 1 else ""
    return cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]


def of_node(node: Any) -> str:
    """The module path of an FX node (``torch.export`` graphs): its ``nn_module_stack``'s innermost entry."""
    meta = getattr(node, "meta", None) or {}
    return from_module_stack(meta.get("nn_module_stack"))


def from_name_scopes(scopes: Sequence[str]) -> str:
    """ONNX ``pkg.torch.onnx.name_scopes`` (``['', 'stem', 'stem.conv1', 'conv2d']``) → ``stem.conv1``.

    The last entry is the FX node's own name, the first the root module (``""``).
    """
    modules = [s for s in list(scopes)[:-1] if isinstance(s, str) and s]
    return clean_path(modules[-1]) if modules else ROOT


def from_onnx_metadata(props: Mapping[str, str]) -> str:
    """The module path of an ONNX node from its ``metadata_props`` (``""`` when it carries none)."""
    scopes = props.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            items = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            items = None
        if isinstance(items, (list, tuple)) and items:
            return from_name_scopes([str(s) for s in items])
    ns = props.get("namespace")
    if ns:  # ": Cls/path: Cls/.../node: aten.op" (older exporters)
        parts = [p.split(":", 1)[0].strip() for p in ns.split("/")[:-1]]
        parts = [p for p in parts if p]
        return clean_path(parts[-1]) if parts else ROOT
    return UNMAPPED


def onnx_class_hierarchy(props: Mapping[str, str]) -> list[str]:
    """``pkg.torch.onnx.class_hierarchy`` of an ONNX node (module classes, outermost first)."""
    text = props.get("pkg.torch.onnx.class_hierarchy", "")
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def from_torchscript_scope(scope: str) -> str:
    """A TorchScript node's ``scopeName()`` (``__module.stages/__module.stages.0``) → ``stages.0``."""
    if not scope:
        return UNMAPPED
    return clean_path(scope.split("/")[-1])


def from_mil_op(op: Any) -> str:
    """The module path coremltools recorded on a MIL op converted from a TorchScript trace (``""`` if none).

    Its ``TORCHSCRIPT_MODULE_NAME`` scope lists the module names and, last, the TorchScript value."""
    try:
        from coremltools.converters.mil.mil.scope import ScopeSource
    except ImportError:  # pragma: no cover - coremltools is a dependency
        return UNMAPPED
    names = (getattr(op, "scopes", None) or {}).get(ScopeSource.TORCHSCRIPT_MODULE_NAME)
    return clean_path(".".join(str(n) for n in names[:-1])) if names else UNMAPPED


_LITERT_TRAILER = re.compile(r"^\d*$")


def litert_location_paths(name: str, known: set[str] | None = None) -> list[str]:
    """Module paths in a litert-torch tensor/op name, one per ``;``-separated location.

    A location is ``<root class>/<class>_<attr>/<class>_<attr>...`` (a trailing ``;N`` index is not a
    location); each component's attribute name follows the first ``_`` after the last ``.`` of the
    class's qualified name. With ``known`` (``named_modules`` paths), a class name containing ``_``
    takes the split that names a real module.
    """
    paths = []
    for loc in name.split(";"):
        comps = loc.split("/")
        if _LITERT_TRAILER.match(loc) or "." not in comps[0]:
            continue  # an index trailer, or not a litert-torch location (e.g. a TF name scope)
        attrs: list[str] = []
        for comp in comps[1:]:
            dot = comp.rfind(".")
            splits = [i for i in range(dot + 1, len(comp)) if comp[i] == "_"] if dot >= 0 else []
            if not splits:
                break
            attr = comp[splits[0] + 1:]
            if known is not None:
                for i in splits:
                    if ".".join([*attrs, comp[i + 1:]]) in known:
                        attr = comp[i + 1:]
                        break
            attrs.append(attr)
        paths.append(".".join(attrs) if attrs else ROOT)
    return paths


def from_litert_name(name: str, known: set[str] | None = None) -> str:
    """The module of a litert-torch tensor name (``""`` when the name is not a litert-torch location).

    The last location is the op's own; locations fused into it are ignored, except a BatchNorm folded
    into its conv: then the op maps to the pair's parent, as in the other formats. With ``known`` (the
    model's ``named_modules`` paths), a path that is not one is repaired: litert-torch leaves out a container
    whose children are called one by one (``features`` in ``for f in self.features``), so a path naming
    exactly one known module by its tail becomes that module; else it is cut back to its longest known prefix.
    """
    locs = [loc for loc in name.split(";") if not _LITERT_TRAILER.match(loc) and "." in loc.split("/")[0]]
    paths = litert_location_paths(name, known)
    if known is not None:
        paths = [_repair(p, known) for p in paths]
    if not paths:
        return UNMAPPED
    primary = paths[-1]
    if len(locs) > 1 and any("BatchNorm" in loc.rsplit("/", 1)[-1] for loc in locs):
        return parent(primary)
    return primary


def _repair(path: str, known: set[str]) -> str:
    if path in known or path == ROOT:
        return path
    tails = [k for k in known if k.endswith("." + path)]
    if len(tails) == 1:
        return tails[0]
    comps = path.split(".")
    while comps and ".".join(comps) not in known:
        comps.pop()
    return ".".join(comps) or ROOT


def common_module(paths: Iterable[str]) -> str:
    """Longest common dotted prefix of the mapped paths (``ROOT`` when they share none, ``""`` when none)."""
    paths = list(paths)
    parts = [p.split(".") for p in paths if p and p != ROOT]
    if not parts:
        return ROOT if any(p == ROOT for p in paths) else UNMAPPED
    prefix: list[str] = []
    for comps in zip(*parts):
        if len(set(comps)) != 1:
            break
        prefix.append(comps[0])
    return ".".join(prefix) or ROOT


def parent(path: str) -> str:
    """``a.b.c`` → ``a.b``; a top-level child or the root → ``ROOT``."""
    if not path or path == ROOT or "." not in path:
        return ROOT if path else UNMAPPED
    return path.rsplit(".", 1)[0]


def cut(path: str, depth: int | None) -> str:
    """``stages.1.blocks.0.mlp`` cut to ``depth`` dotted components (None or 0 = unchanged)."""
    if not depth or not path or path == ROOT:
        return path
    return ".".join(path.split(".")[:depth])
