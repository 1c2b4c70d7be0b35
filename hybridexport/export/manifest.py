"""The artifact manifest: ``<artifact>.json`` beside every exported file.

Minimal contract shared with the bench stage; the export stage owns and may extend it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError
from hybridexport.jsonfile import read_json

FORMATS = ("coreml", "tflite", "onnx", "executorch")
EXTENSIONS = {"coreml": ".mlpackage", "tflite": ".tflite", "onnx": ".onnx", "executorch": ".pte"}


@dataclass
class Parity:
    """How the artifact's outputs compare with PyTorch on fixed random inputs."""

    verified: bool
    max_abs_err: float | None = None
    rel_l2_err: float | None = None
    top1_agreement: float | None = None
    n_inputs: int = 0
    tolerance: float | None = None
    reason: str = ""


@dataclass
class Manifest:
    model: str
    resolution: int
    format: str
    precision: str
    path: str
    size_bytes: int
    sha256: str
    versions: dict[str, str]
    passes: list[str]
    parity: Parity
    ops: dict[str, int]
    rank5_tensors: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Manifest:
        try:
            body = dict(d)
            body["parity"] = Parity(**body["parity"])
            known = set(cls.__dataclass_fields__)
            extra = {k: v for k, v in body.items() if k not in known}
            body = {k: v for k, v in body.items() if k in known}
            body.setdefault("extra", {}).update(extra)
            return cls(**body)
        except (KeyError, TypeError) as exc:
            raise InputFileError(f"{source}: not a hybridexport manifest ({exc}); re-run `hybridexport convert`") from None

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        return cls.from_dict(read_json(path, "manifest"), source=str(Path(path)))


def manifest_path(artifact: str | Path) -> Path:
    """``foo.onnx`` → ``foo.onnx.json`` (works for directories such as ``.mlpackage`` too)."""
    a = Path(artifact)
    return a.with_name(a.name + ".json")


DEFAULT_OUT = Path("hybridexport-out")


def artifact_path(out: str | Path, model: str, fmt: str, precision: str) -> Path:
    """Where ``convert`` writes an artifact: ``<out>/<model>/<model>.<precision><ext>``."""
    safe = model.replace(":", "_").replace("/", "_")
    return Path(out) / safe / f"{safe}.{precision}{EXTENSIONS[fmt]}"


def find_manifests(out: str | Path = DEFAULT_OUT) -> list[Manifest]:
    """Every manifest ``convert`` wrote under ``out`` (what ``bench`` with no MODEL benchmarks)."""
    return [Manifest.load(p) for p in sorted(Path(out).glob("*/*.json"))]
