"""Artifact identity: tool versions, content hashes and the cache key that lets ``convert`` reuse its work."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError
from hybridexport.export.manifest import Manifest, manifest_path

#: Distributions whose versions are recorded in every manifest (and feed the cache key).
TOOLS = (
    "torch",
    "coremltools",
    "litert-torch",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "executorch",
    "torchao",
    "timm",
    "hybridexport",
)


def tool_versions() -> dict[str, str]:
    """Installed version of each tool in :data:`TOOLS` (``"absent"`` when not installed)."""
    out = {}
    for dist in TOOLS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


#: Source that shapes what convert writes (model code, rewrites, exporters, op tables): hashed into the key.
CODE_PACKAGES = ("zoo", "rewrite", "export")
CODE_MODULES = ("modpath.py", "opkinds.py", "optable.py", "analyze/ane_rules.py")


def code_fingerprint() -> str:
    """Hash of this project's model, rewrite, export and op-table source files (a change rebuilds artifacts)."""
    root = Path(__file__).resolve().parents[1]
    files = [f for pkg in CODE_PACKAGES for f in sorted((root / pkg).rglob("*.py"))] + [root / m for m in CODE_MODULES]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """SHA-256 of a file, or of a directory (``.mlpackage``): relative names and contents in sorted order."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f.relative_to(p).as_posix().encode())
            h.update(b"\0")
            _update_file(h, f)
    else:
        _update_file(h, p)
    return h.hexdigest()


def _update_file(h: Any, f: Path) -> None:
    with f.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def size_bytes(path: str | Path) -> int:
    """Size of a file, or the total of a directory's files."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def cache_key(fields: dict[str, Any]) -> str:
    """Stable hash of everything that determines an artifact (weights, options, passes, tool versions)."""
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def reusable(artifact: Path, key: str, *, keep_mismatch: bool) -> Manifest | None:
    """The manifest of an up-to-date artifact at ``artifact`` built with ``key``, else None.

    Up to date means: the manifest exists and carries ``key``, the artifact still has the recorded size and
    sha256, its op table is beside it, and its parity was acceptable (or mismatches are kept now too).
    """
    mpath = manifest_path(artifact)
    if not (mpath.exists() and artifact.exists()):
        return None
    try:
        man = Manifest.load(mpath)
        man.check_artifact()
    except InputFileError:
        return None
    if man.extra.get("cache_key") != key:
        return None
    if man.extra.get("parity_ok") is False and not keep_mismatch:
        return None
    table = man.op_table_path()
    if table is None or not table.exists():
        return None
    return man
