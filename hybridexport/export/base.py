"""What every format module returns, and the registry of format modules.

A format module (``onnx``, ``tflite``, ``coreml``, ``executorch``) exposes:

* ``build(module, example, path, opts) -> Built``: write the artifact to ``path`` (a temporary path the
  caller renames into place), raising the converter's own exception on failure;
* ``run(path, inputs) -> list[list[np.ndarray]]``: outputs for each input, or raise
  :class:`NotRunnableHere` with the reason when the runtime does not exist on this OS.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

FORMAT_MODULES = {
    "onnx": "hybridexport.export.onnx",
    "tflite": "hybridexport.export.tflite",
    "coreml": "hybridexport.export.coreml",
    "executorch": "hybridexport.export.executorch",
}


class NotRunnableHere(Exception):
    """The format's runtime cannot run on this machine; the message says why (and what was checked instead)."""


@dataclass
class Built:
    """What a format module learned while building an artifact."""

    ops: dict[str, int]
    rank5_tensors: int
    converter_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def histogram(names: list[str] | Counter) -> dict[str, int]:
    """Op-name counts, most frequent first (ties by name)."""
    c = names if isinstance(names, Counter) else Counter(names)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def format_module(fmt: str) -> ModuleType:
    """Import the module that implements ``fmt``."""
    return importlib.import_module(FORMAT_MODULES[fmt])
