"""A reference interpreter for Core ML ML Programs: run a saved ``.mlpackage`` on Linux, op by op.

Core ML itself predicts only on macOS; this package executes the program's ``main`` function with the
MIL op definitions (coremltools ``mil/ops/defs``), rounding every op's output to the dtype the program
declares (fp16 for the default ``compute_precision``), so parity can be checked here. It is a reference
of the program's semantics, not of the device: see :mod:`hybridexport.export.mil.interpreter` for
what it cannot reproduce.

Public API (heavy imports happen on first use):

* :func:`run_package` — outputs per input, in the order of the spec's outputs (``coreml.run``'s contract);
* :class:`Interpreter` — the compiled program; ``run(feeds, record=True)`` keeps every op's output;
* :data:`METHOD` / :data:`METHODS` — what to record as the verifying method;
* :class:`NotInterpreted` — raised before running when an op type has no kernel;
* :func:`precision_report` (module ``precision``) — where an fp16 program loses precision.
"""

from __future__ import annotations

from typing import Any

from hybridexport.export.mil.errors import FeedError, NotInterpreted, PackageError, ProgramError

METHODS = {
    "fp16": "MIL reference interpreter (fp16), not Core ML",
    "fp32": "MIL reference interpreter (fp32), not Core ML",
}
METHOD = METHODS["fp16"]

__all__ = ["METHOD", "METHODS", "FeedError", "Interpreter", "NotInterpreted", "PackageError", "ProgramError",
           "load_package", "run_package", "supported_ops", "uninterpreted_ops"]

_LAZY = {
    "Interpreter": "hybridexport.export.mil.interpreter",
    "Result": "hybridexport.export.mil.interpreter",
    "run_package": "hybridexport.export.mil.run",
    "uninterpreted_ops": "hybridexport.export.mil.run",
    "supported_ops": "hybridexport.export.mil.run",
    "load_package": "hybridexport.export.mil.program",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybridexport.export.mil' has no attribute '{name}'")
