"""hybridexport: rewrite, export and profile mobile hybrid vision networks.

Public API (each stage is a plain function; the CLI is a thin layer over them; see
:mod:`hybridexport.api`): ``hybridexport.info``, ``hybridexport.rewrite``, ``hybridexport.convert``,
``hybridexport.bench``, ``hybridexport.compare``, ``hybridexport.zoo.build_model``. Each takes a model
name, ``file.py:factory``, a ``.pt2`` or an ``nn.Module`` with example inputs. Stage functions are
imported lazily so ``import hybridexport`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "hybridexport.zoo:build_model",
    "analyze": "hybridexport.analyze:analyze",
    "info": "hybridexport.api:info",
    "rewrite": "hybridexport.api:rewrite",
    "convert": "hybridexport.api:convert",
    "bench": "hybridexport.api:bench",
    "compare": "hybridexport.report.compare:compare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'hybridexport' has no attribute {name!r}")
