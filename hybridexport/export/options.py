"""What ``convert`` can be asked for: precisions, parity tolerances and the options that shape an artifact.

Format facts (default precision, Core ML targets, which options a format takes) live in the format
modules (:mod:`hybridexport.export.formats`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from hybridexport.export.formats import BadOptionError, get

PRECISIONS = ("fp32", "fp16", "int8")

#: Largest relative L2 error ``||y - y_ref|| / ||y_ref||`` (worst input) accepted against fp32 PyTorch.
TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}

#: Bumped when the export code changes what it writes, so cached artifacts are rebuilt.
EXPORTER_REVISION = 2

__all__ = ["EXPORTER_REVISION", "PRECISIONS", "TOLERANCE", "BadOptionError", "ExportOptions", "resolve_precision"]


def resolve_precision(fmt: str, precision: str | None) -> str:
    """The precision for ``fmt``: the one asked for, else the format's default."""
    p = (precision or get(fmt).default_precision).lower()
    if p not in PRECISIONS:
        raise BadOptionError(f"unknown precision '{precision}'; use one of: {', '.join(PRECISIONS)}")
    return p


@dataclass(frozen=True)
class ExportOptions:
    """Options that shape one artifact (the format says which are part of its cache key) plus how it is checked."""

    precision: str
    verify_inputs: int = 4
    coreml_target: str | None = None  # None: the Core ML format's default for the precision
    coreml_image_input: bool = False
    keep_mismatch: bool = False  # keep an artifact whose parity check failed
    verbose: bool = False
    input_names: tuple[str, ...] = ()  # names of the artifact's inputs (default: the format's)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BadOptionError(f"unknown precision '{self.precision}'; use one of: {', '.join(PRECISIONS)}")
        if self.verify_inputs < 0:
            raise BadOptionError(f"--verify-inputs must be >= 0, got {self.verify_inputs}")
        bad = [n for n in self.input_names if not n.isidentifier()]
        if bad:
            raise BadOptionError(f"--input-name {bad[0]!r} is not a name (letters, digits, _; not starting with a digit)")
        if len(set(self.input_names)) != len(self.input_names):
            raise BadOptionError("--input-name gives one name twice; give each input its own name")

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.precision]

    def given(self) -> set[str]:
        """Names of the format-specific options set away from their defaults."""
        defaults = {f.name: f.default for f in fields(self)}
        return {n for n in ("coreml_target", "coreml_image_input") if getattr(self, n) != defaults[n]}

    def key_fields(self, fmt: str) -> dict[str, Any]:
        """The options that change the artifact written for ``fmt`` (for the cache key)."""
        return get(fmt).key_options(self)
