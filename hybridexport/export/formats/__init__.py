"""The artifact formats: ``coreml``, ``tflite``, ``onnx``, ``executorch`` — one module each.

``get(name)`` returns a format's :class:`~hybridexport.export.formats.base.Format`; ``for_path(path)``
the format of a file by its suffix; ``parse(to)`` validates a ``--to`` value. Format modules import
their converters lazily, so asking a format for its facts is cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from hybridexport.errors import HybridExportError

if TYPE_CHECKING:
    from hybridexport.export.formats.base import Format

#: every format, in the order ``--to all`` builds them
NAMES: tuple[str, ...] = ("coreml", "tflite", "onnx", "executorch")


class BadOptionError(HybridExportError):
    """An export option that is not valid (unknown format, precision or Core ML target)."""


def get(name: str) -> Format:
    """The format called ``name`` (a one-line error listing the known ones otherwise)."""
    if name not in NAMES:
        raise BadOptionError(f"unknown format '{name}'; use one of: {', '.join(NAMES)}")
    return importlib.import_module(f"hybridexport.export.formats.{name}").FORMAT


def title(name: str) -> str:
    """``Core ML`` for ``coreml``; unknown names (``pytorch``) as given."""
    return get(name).title if name in NAMES else name


def for_path(path: str | Path) -> Format:
    """The format of an artifact file by its suffix (``.mlpackage``, ``.tflite``, ``.onnx``, ``.pte``)."""
    p = Path(path)
    for name in NAMES:
        fmt = get(name)
        if p.name.endswith(fmt.suffix):
            return fmt
    known = ", ".join(get(n).suffix for n in NAMES)
    raise BadOptionError(f"'{p}' is not an artifact this tool reads (known suffixes: {known})")


def parse(to: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"all"``, ``"onnx"``, ``"onnx,tflite"`` or a list → validated format names, in order, no repeats."""
    items = [to] if isinstance(to, str) else list(to)
    names: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip().lower()
            if not part:
                continue
            for name in (NAMES if part == "all" else (part,)):
                get(name)  # unknown names fail here
                if name not in names:
                    names.append(name)
    if not names:
        raise BadOptionError(f"no format given; use --to with one of: {', '.join(NAMES)}, all")
    return names
