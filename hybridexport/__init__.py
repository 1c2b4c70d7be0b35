"""hybridexport: rewrite, export and profile mobile hybrid vision networks.

Public API (each stage is a plain function; the CLI is a thin layer over them):
``hybridexport.zoo.build_model``, ``hybridexport.convert``, ``hybridexport.bench``,
``hybridexport.compare``. Stage functions are imported lazily so ``import hybridexport`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "hybridexport.zoo:build_model",
    "analyze": "hybridexport.analyze:analyze",
    "rewrite": "hybridexport.rewrite.pipeline:run_pipeline",
    "convert": "hybridexport.export:convert",
    "bench": "hybridexport.bench:bench",
    "compare": "hybridexport.report.compare:compare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'hybridexport' has no attribute {name!r}")
