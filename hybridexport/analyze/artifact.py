"""``hybridexport info path/to/model.{mlpackage,onnx,tflite,pte}``: what an exported file holds.

Read from the artifact's op table (the one ``convert`` wrote beside it, else built from the file, which
works for artifacts made elsewhere): inputs, outputs, op histogram, how many ops map to ``nn.Module``
paths, and for Core ML the Neural Engine findings of the saved program.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridexport.optable import OpTable, TensorSpec


@dataclass
class ArtifactInfo:
    path: str
    format: str
    size_bytes: int
    sha256: str
    model: str | None  # from the manifest beside it; None for a file made elsewhere
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ops: dict[str, int]
    total_ops: int
    rank5_tensors: int
    mapped_share: float
    module_mapping: str
    ane_findings: list[Any] | None = None  # ane_rules.Finding, Core ML only
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.ane_findings is not None:
            from hybridexport.analyze.ane_rules import summarize

            d["ane_findings"] = [f.to_dict() for f in self.ane_findings]
            d["ane_summary"] = summarize(self.ane_findings)
        return d


def artifact_info(path: str | Path) -> ArtifactInfo:
    """Everything ``info`` shows about one artifact file (its manifest is checked when it has one)."""
    from hybridexport.errors import InputFileError
    from hybridexport.export import formats
    from hybridexport.export.cache import sha256_path, size_bytes
    from hybridexport.export.manifest import Manifest, manifest_path

    p = Path(path)
    fmt = formats.for_path(p)
    if not p.exists():
        raise InputFileError(f"artifact '{p}' does not exist")
    man = Manifest.load(manifest_path(p)) if manifest_path(p).exists() else None
    if man is not None:
        man.check_artifact()
        table = OpTable.load(man.op_table_path())
    else:
        table = fmt.op_table(p)
    findings = None
    if fmt.name == "coreml":
        from hybridexport.analyze.ane_rules import artifact_findings

        findings = artifact_findings(p, table.module_of)
    return ArtifactInfo(
        path=str(p), format=fmt.name, size_bytes=man.size_bytes if man else size_bytes(p),
        sha256=man.sha256 if man else sha256_path(p), model=man.model if man else None,
        inputs=table.inputs, outputs=table.outputs, ops=table.histogram(), total_ops=len(table.ops),
        rank5_tensors=table.rank5_tensors(), mapped_share=table.mapped_share(),
        module_mapping=table.module_mapping, ane_findings=findings,
        manifest={k: v for k, v in (man.to_dict() if man else {}).items() if k in ("precision", "passes", "parity")},
    )


def render_artifact(info: ArtifactInfo, console: Any) -> None:
    """Rich tables: summary, inputs/outputs, op histogram, then the Neural Engine report (Core ML)."""
    from rich.table import Table

    from hybridexport.analyze.render import RAW_OPS_SHOWN, size
    from hybridexport.export import formats

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("artifact", f"{info.path} ({formats.title(info.format)}, {size(info.size_bytes)})")
    grid.add_row("made by", f"hybridexport convert {info.model}" if info.model else "elsewhere (no manifest beside it)")
    for t in info.inputs:
        grid.add_row("input", f"{t.name}: {'×'.join(map(str, t.shape))} {t.dtype}".rstrip())
    for t in info.outputs:
        grid.add_row("output", f"{t.name}: {'×'.join(map(str, t.shape))} {t.dtype}".rstrip())
    grid.add_row("ops", f"{info.total_ops} ({info.rank5_tensors} rank-5 tensors)")
    grid.add_row("module paths", f"{info.mapped_share:.0%} of ops"
                 + (f"  [dim]{info.module_mapping}[/]" if info.module_mapping else
                    "  [dim]the file carries none: rows keep the runtime's op names[/]"))
    console.print(grid)
    hist = Table(title="op histogram", title_justify="left")
    hist.add_column("op")
    hist.add_column("count", justify="right")
    for op, n in list(info.ops.items())[:RAW_OPS_SHOWN]:
        hist.add_row(op, str(n))
    if len(info.ops) > RAW_OPS_SHOWN:
        hist.add_row(f"… {len(info.ops) - RAW_OPS_SHOWN} more", "")
    console.print(hist)
    if info.ane_findings is not None:
        from hybridexport.analyze.ane_rules import render_ane_report

        render_ane_report(info.ane_findings, console, title=f"Neural Engine ({Path(info.path).name})")
