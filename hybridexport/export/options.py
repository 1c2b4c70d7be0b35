"""What ``convert`` can be asked for: formats, precisions, per-format defaults and parity tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hybridexport.errors import HybridExportError
from hybridexport.export.manifest import FORMATS

PRECISIONS = ("fp32", "fp16", "int8")

#: Precision used when none is asked for. Core ML defaults to fp16: the protocol behind the published
#: iPhone latencies (iFormer's export_coreml.py: traced model, FP16 compute, ComputeUnit.ALL, iOS15).
DEFAULT_PRECISION: dict[str, str] = {"coreml": "fp16", "tflite": "fp32", "onnx": "fp32", "executorch": "fp32"}

#: Largest relative L2 error ``||y - y_ref|| / ||y_ref||`` (worst input) accepted against fp32 PyTorch.
TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}

COREML_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
DEFAULT_COREML_TARGET = "iOS15"

#: Bumped when the export code changes what it writes, so cached artifacts are rebuilt.
EXPORTER_REVISION = 1


class BadOptionError(HybridExportError):
    """An export option that is not valid (unknown format, precision or Core ML target)."""


def parse_formats(to: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"all"``, ``"onnx"``, ``"onnx,tflite"`` or a list → validated format names, in order, no repeats."""
    items = [to] if isinstance(to, str) else list(to)
    names: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip().lower()
            if not part:
                continue
            expanded = list(FORMATS) if part == "all" else [part]
            for fmt in expanded:
                if fmt not in FORMATS:
                    raise BadOptionError(f"unknown format '{fmt}'; use one of: {', '.join(FORMATS)}, all")
                if fmt not in names:
                    names.append(fmt)
    if not names:
        raise BadOptionError(f"no format given; use --to with one of: {', '.join(FORMATS)}, all")
    return names


def resolve_precision(fmt: str, precision: str | None) -> str:
    """The precision for ``fmt``: the one asked for, else the format's default."""
    p = (precision or DEFAULT_PRECISION[fmt]).lower()
    if p not in PRECISIONS:
        raise BadOptionError(f"unknown precision '{precision}'; use one of: {', '.join(PRECISIONS)}")
    return p


@dataclass(frozen=True)
class ExportOptions:
    """Options that shape one artifact (part of its cache key) plus how it is checked."""

    precision: str
    verify_inputs: int = 4
    coreml_target: str | None = None  # None: iOS15, or iOS16 for int8 (constexpr ops need iOS16)
    coreml_image_input: bool = False
    allow_mismatch: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BadOptionError(f"unknown precision '{self.precision}'; use one of: {', '.join(PRECISIONS)}")
        if self.coreml_target is not None and self.coreml_target not in COREML_TARGETS:
            raise BadOptionError(
                f"unknown Core ML deployment target '{self.coreml_target}'; use one of: {', '.join(COREML_TARGETS)}"
            )
        if self.verify_inputs < 0:
            raise BadOptionError(f"--verify-inputs must be >= 0, got {self.verify_inputs}")

    def check_for(self, fmt: str) -> None:
        """Raise BadOptionError for combinations ``fmt`` cannot build."""
        if fmt == "coreml" and self.precision == "int8" and self.coreml_target == "iOS15":
            raise BadOptionError(
                "Core ML int8 weights need iOS16 or later (constexpr_affine_dequantize); "
                "use --coreml-target iOS16 or leave it out"
            )

    @property
    def resolved_coreml_target(self) -> str:
        """The Core ML deployment target: the one asked for, else iOS15 (iOS16 for int8)."""
        if self.coreml_target is not None:
            return self.coreml_target
        return "iOS16" if self.precision == "int8" else DEFAULT_COREML_TARGET

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.precision]

    def key_fields(self, fmt: str) -> dict[str, Any]:
        """The options that change the artifact written for ``fmt`` (for the cache key)."""
        d = asdict(self)
        d.pop("verbose")
        d.pop("allow_mismatch")
        d["coreml_target"] = self.resolved_coreml_target
        if fmt != "coreml":
            d.pop("coreml_target")
            d.pop("coreml_image_input")
        return d
