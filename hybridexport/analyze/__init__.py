"""Model analysis: parameters (as built and BatchNorm-folded), MACs, peak activation memory, op histograms.

Public entry points (imported lazily so that ``hybridexport --help`` does not import torch):

* ``analyze(loaded_model) -> ModelAnalysis`` — everything ``hybridexport info`` shows.
* ``graph_ops(module, example_input) -> dict`` — op histogram of the ``torch.export`` graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybridexport.analyze.model import ModelAnalysis, StageRow, analyze
    from hybridexport.analyze.ops import count_ops, graph_ops

__all__ = ["ModelAnalysis", "StageRow", "analyze", "count_ops", "graph_ops"]

_LAZY = {
    "ModelAnalysis": "hybridexport.analyze.model",
    "StageRow": "hybridexport.analyze.model",
    "analyze": "hybridexport.analyze.model",
    "count_ops": "hybridexport.analyze.ops",
    "graph_ops": "hybridexport.analyze.ops",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybridexport.analyze' has no attribute {name!r}")
