"""Read the ML Program inside a saved ``.mlpackage`` back into a coremltools MIL program.

coremltools parses the spec and its weight file on Linux (``milproto.load``); nothing here needs macOS.
The feature descriptions (names, image or tensor, dtype, shape) come from the spec's ``description``,
in the spec's order, which is the order of the outputs Core ML returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.export.mil.errors import PackageError


@dataclass(frozen=True)
class Feature:
    """A model input or output as the spec describes it."""

    name: str
    kind: str  # "tensor" or "image"
    shape: tuple[int, ...]
    dtype: str = ""  # multiarray: "fp32", "fp16", "int32", "fp64"; image: ""
    color: str = ""  # image: "RGB", "BGR", "GRAYSCALE", "GRAYSCALE_FLOAT16"


@dataclass
class Package:
    """A loaded ``.mlpackage``: its MIL program, spec version and features."""

    path: Path
    program: Any
    spec_version: int
    inputs: list[Feature]
    outputs: list[Feature]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def main(self) -> Any:
        return self.program.functions["main"]


_ARRAY_DTYPES = {"FLOAT32": "fp32", "FLOAT16": "fp16", "DOUBLE": "fp64", "INT32": "int32"}


def load_package(path: str | Path) -> Package:
    """Load the ML Program at ``path``; a :class:`PackageError` names what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise PackageError(f"Core ML package '{p}' does not exist; give the .mlpackage that "
                           "`hybridexport convert --to coreml` wrote")
    if not p.is_dir() or not (p / "Manifest.json").is_file():
        raise PackageError(f"'{p}' is not an .mlpackage (a folder with Manifest.json); an ML Program is always "
                           "saved as one: re-run `hybridexport convert --to coreml`")
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    try:
        model = ct.models.MLModel(str(p), skip_model_load=True)
        spec = model.get_spec()
    except Exception as exc:
        raise PackageError(f"'{p}' cannot be read as a Core ML package ({type(exc).__name__}: "
                           f"{_first_line(exc)}); re-run `hybridexport convert --to coreml --force`") from None
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise PackageError(f"'{p}' holds a {kind}, not an ML Program; the interpreter reads ML Programs only "
                           "(`hybridexport convert --to coreml` writes one)")
    try:
        program = load_milproto(spec, spec.specificationVersion, model.weights_dir or "")
    except Exception as exc:
        raise PackageError(f"the ML Program in '{p}' does not load ({type(exc).__name__}: {_first_line(exc)}); "
                           "it is damaged or was edited inconsistently: re-run `hybridexport convert --force`") from None
    if "main" not in program.functions:
        raise PackageError(f"the ML Program in '{p}' has no 'main' function (has: {', '.join(program.functions)})")
    return Package(
        path=p,
        program=program,
        spec_version=int(spec.specificationVersion),
        inputs=[_feature(f) for f in spec.description.input],
        outputs=[_feature(f) for f in spec.description.output],
        metadata=dict(spec.description.metadata.userDefined),
    )


def _feature(f: Any) -> Feature:
    kind = f.type.WhichOneof("Type")
    if kind == "imageType":
        from coremltools.proto import FeatureTypes_pb2

        im = f.type.imageType
        color = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(im.colorSpace)
        channels = 1 if color.startswith("GRAYSCALE") else 3
        return Feature(f.name, "image", (1, channels, int(im.height), int(im.width)), color=color)
    if kind == "multiArrayType":
        from coremltools.proto import FeatureTypes_pb2

        ma = f.type.multiArrayType
        dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(ma.dataType)
        return Feature(f.name, "tensor", tuple(int(s) for s in ma.shape), _ARRAY_DTYPES.get(dtype, dtype.lower()))
    return Feature(f.name, kind or "unknown", ())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
