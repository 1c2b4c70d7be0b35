"""Mobile-friendly rewrites of ``nn.Module`` trees, each one a verified pass.

``run_pipeline(module, example_input, passes=None, target=None) -> (new_module, RewriteReport)``
(in :mod:`hybridexport.rewrite.pipeline`). Passes: ``reparameterize``, ``fuse-bn``, ``group-norm-rank4``,
``unfold-as-conv``, ``window-partition-rank4``, ``split-heads``, ``attention-graph`` (the default pipeline) and
the opt-in ``linear-to-conv``. Imported lazily so that the
CLI's ``--help`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_pipeline": "hybridexport.rewrite.pipeline",
    "resolve_passes": "hybridexport.rewrite.pipeline",
    "DEFAULT_PASSES": "hybridexport.rewrite.pipeline",
    "TARGET_PASSES": "hybridexport.rewrite.pipeline",
    "RewriteReport": "hybridexport.rewrite.report",
    "PassRecord": "hybridexport.rewrite.report",
    "render_report": "hybridexport.rewrite.report",
    "UnknownPassError": "hybridexport.rewrite.base",
    "known_pass_names": "hybridexport.rewrite.base",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybridexport.rewrite' has no attribute {name!r}")
