"""The export stage: a model → Core ML / TFLite / ONNX / ExecuTorch artifacts, each verified, with a manifest.

``convert(...)`` (in :mod:`hybridexport.export.api`) is the entry point; per-format builders live in
``onnx``, ``tflite``, ``coreml`` and ``executorch``. Heavy libraries load lazily, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from hybridexport.export.manifest import (
    DEFAULT_OUT,
    EXTENSIONS,
    FORMATS,
    Manifest,
    Parity,
    artifact_path,
    find_manifests,
    manifest_path,
)

__all__ = [
    "DEFAULT_OUT",
    "EXTENSIONS",
    "FORMATS",
    "Manifest",
    "Parity",
    "artifact_path",
    "convert",
    "find_manifests",
    "manifest_path",
    "onnx_node_modules",
]

_LAZY = {
    "convert": "hybridexport.export.api:convert",
    "onnx_node_modules": "hybridexport.export.onnx:onnx_node_modules",
    "DEFAULT_PRECISION": "hybridexport.export.options:DEFAULT_PRECISION",
    "TOLERANCE": "hybridexport.export.options:TOLERANCE",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'hybridexport.export' has no attribute {name!r}")
