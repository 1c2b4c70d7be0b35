"""The export stage: a model → Core ML / TFLite / ONNX / ExecuTorch artifacts, each verified, with a manifest
and an op table.

``convert(...)`` (in :mod:`hybridexport.export.api`) is the entry point; each format is one module in
:mod:`hybridexport.export.formats`. Heavy libraries load lazily, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from hybridexport.export.manifest import (
    DEFAULT_OUT,
    Manifest,
    Parity,
    artifact_path,
    find_manifests,
    manifest_path,
)

__all__ = ["DEFAULT_OUT", "Manifest", "Parity", "artifact_path", "convert", "find_manifests", "manifest_path"]


def __getattr__(name: str) -> Any:
    if name == "convert":
        return importlib.import_module("hybridexport.export.api").convert
    raise AttributeError(f"module 'hybridexport.export' has no attribute {name!r}")
