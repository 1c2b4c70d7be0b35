"""Published model names → models we can build, and the calibration rows each device uses.

The CSV names models the way papers print them ("RepViT-M1.5 (* distill)"). ``CATALOG`` maps each
name we can rebuild to a builder id (a zoo name such as ``timm:repvit_m1_5`` or ``iformer-m``,
``tv:<torchvision name>``, or ``timmgen:<generator>:<width>`` for width multipliers timm does not
register) and a family used for leave-one-family-out validation. Names not listed are skipped
with a reason; nothing is guessed.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "latency" / "published_latency.csv"

# published name → (builder id, family)
CATALOG: dict[str, tuple[str, str]] = {
    # iPhone 13, iFormer protocol
    "MobileNetV2 1.0x": ("timm:mobilenetv2_100", "mobilenetv2"),
    "MobileNetV3-Large 0.75x": ("timm:mobilenetv3_large_075", "mobilenetv3"),
    "MobileNetV3-Large 1.0x": ("timm:mobilenetv3_large_100", "mobilenetv3"),
    "MNV4-Conv-S": ("timm:mobilenetv4_conv_small", "mobilenetv4"),
    "MNV4-Conv-M": ("timm:mobilenetv4_conv_medium", "mobilenetv4"),
    "iFormer-T": ("iformer-t", "iformer"),
    "iFormer-M": ("iformer-m", "iformer"),
    "iFormer-M (distill)": ("iformer-m", "iformer"),
    "iFormer-M SHMA (global attention)": ("iformer-m", "iformer"),
    "iFormer-M (Xcode perf report screenshot, median prediction)": ("iformer-m", "iformer"),
    "iFormer-L2 (distill)": ("iformer-l2", "iformer"),
    "SwiftFormer-XS": ("timm:swiftformer_xs", "swiftformer"),
    "SwiftFormer-L1": ("timm:swiftformer_l1", "swiftformer"),
    "GhostNetV3 1.0x (dagger: advanced training)": ("timm:ghostnetv3_100", "ghostnet"),
    "GhostNetV3 1.6x (dagger: advanced training)": ("timm:ghostnetv3_160", "ghostnet"),
    "MobileOne-S0": ("timm:mobileone_s0", "mobileone"),
    "MobileOne-S2": ("timm:mobileone_s2", "mobileone"),
    "MobileOne-S4": ("timm:mobileone_s4", "mobileone"),
    "RepViT-M1.0": ("timm:repvit_m1_0", "repvit"),
    "RepViT-M1.5": ("timm:repvit_m1_5", "repvit"),
    "RepViT-M1.5 [Table 18 value; Table 3 says 1.54]": ("timm:repvit_m1_5", "repvit"),
    "RepViT-M1.5 (* distill)": ("timm:repvit_m1_5", "repvit"),
    "FastViT-T8 (dagger)": ("timm:fastvit_t8", "fastvit"),
    "FastViT-T12": ("timm:fastvit_t12", "fastvit"),
    "FastViT-T12 (* distill/reparam)": ("timm:fastvit_t12", "fastvit"),
    "FastViT-S12": ("timm:fastvit_s12", "fastvit"),
    "FastViT-S12 (dagger)": ("timm:fastvit_s12", "fastvit"),
    "FastViT-SA24": ("timm:fastvit_sa24", "fastvit"),
    "FastViT-SA36": ("timm:fastvit_sa36", "fastvit"),
    "Mobile-Former-52M": ("mobileformer-52m", "mobileformer"),
    "Mobile-Former-294M": ("mobileformer-294m", "mobileformer"),
    "SHViT-S1": ("timm:shvit_s1", "shvit"),
    "SHViT-S4": ("timm:shvit_s4", "shvit"),
    "SHViT-S4 (distill table)": ("timm:shvit_s4", "shvit"),
    "ShuffleNetV2 1.0x": ("tv:shufflenet_v2_x1_0", "shufflenetv2"),
    "ShuffleNetV2 1.5x": ("tv:shufflenet_v2_x1_5", "shufflenetv2"),
    "ShuffleNetV2 2.0x": ("tv:shufflenet_v2_x2_0", "shufflenetv2"),
    "EfficientNet-B0": ("timm:efficientnet_b0", "efficientnet"),
    "EfficientNet-B2": ("timm:efficientnet_b2", "efficientnet"),
    "EfficientNet-b0": ("timm:efficientnet_b0", "efficientnet"),
    "EfficientNet-b2": ("timm:efficientnet_b2", "efficientnet"),
    "LowFormer-B0": ("timm:lowformer_b0", "lowformer"),
    "LowFormer-B1.5": ("timm:lowformer_b15", "lowformer"),
    "MobileViT-XXS": ("mobilevit-xxs", "mobilevit"),
    "MobileViTV2-0.5": ("timm:mobilevitv2_050", "mobilevitv2"),
    "MobileViTv2-0.5": ("timm:mobilevitv2_050", "mobilevitv2"),
    "MobileViTv2-1.0": ("timm:mobilevitv2_100", "mobilevitv2"),
    "MobileViTv2-1.5": ("timm:mobilevitv2_150", "mobilevitv2"),
    "MobileViTv2-2.0": ("timm:mobilevitv2_200", "mobilevitv2"),
    "MobileViTv2-2.0 (IN-21k-P pretrain)": ("timm:mobilevitv2_200", "mobilevitv2"),
    "MobileViTv2-2.0 (IN-21k-P, 384)": ("timm:mobilevitv2_200", "mobilevitv2"),
    "EfficientViT-B1-r224": ("timm:efficientvit_b1", "efficientvit"),
    "MIT-EfficientViT-B1-r224": ("timm:efficientvit_b1", "efficientvit"),
    "MIT-EfficientViT-B2-r256": ("timm:efficientvit_b2", "efficientvit"),
    "MIT-EfficientViT-B3-r224": ("timm:efficientvit_b3", "efficientvit"),
    "EfficientFormerV2-S1 (distill)": ("timm:efficientformerv2_s1", "efficientformerv2"),
    "EfficientFormerV2-L (distill)": ("timm:efficientformerv2_l", "efficientformerv2"),
    "EfficientFormerV2-L": ("timm:efficientformerv2_l", "efficientformerv2"),
    "EfficientFormer-L1": ("timm:efficientformer_l1", "efficientformer"),
    "EfficientFormer-L3": ("timm:efficientformer_l3", "efficientformer"),
    "ConvNeXt-B": ("timm:convnext_base", "convnext"),
    "ConvNeXt-T": ("timm:convnext_tiny", "convnext"),
    "ConvNext-T": ("timm:convnext_tiny", "convnext"),
    "ConvNext-T (IN-21k)": ("timm:convnext_tiny", "convnext"),
    "ConvNext-T (IN-21k, 384)": ("timm:convnext_tiny", "convnext"),
    "ConvNext-S": ("timm:convnext_small", "convnext"),
    "ResNet18": ("timm:resnet18", "resnet"),
    "ResNet50": ("timm:resnet50", "resnet"),
    "PoolFormer-S12": ("timm:poolformer_s12", "poolformer"),
    "PoolFormer-S24": ("timm:poolformer_s24", "poolformer"),
    "PVTv2-B1": ("timm:pvt_v2_b1", "pvtv2"),
    "DeiT-Tiny": ("timm:deit_tiny_patch16_224", "deit"),
    "DeiT-Base": ("timm:deit_base_patch16_224", "deit"),
    # Android, MobileNetV4 protocol
    "MobileNet-V1": ("timm:mobilenetv1_100", "mobilenetv1"),
    "MobileNet-V2": ("timm:mobilenetv2_100", "mobilenetv2"),
    "MobileNet-V2-0.5x": ("timm:mobilenetv2_050", "mobilenetv2"),
    "MobileNet-V2-1.5x": ("timmgen:mobilenetv2:1.5", "mobilenetv2"),
    "MobileNet-V2-2.0x": ("timmgen:mobilenetv2:2.0", "mobilenetv2"),
    "MobileNet-V3L-0.5x": ("timmgen:mobilenetv3_large:0.5", "mobilenetv3"),
    "MNv4-Conv-S": ("timm:mobilenetv4_conv_small", "mobilenetv4"),
    "MNv4-Conv-M": ("timm:mobilenetv4_conv_medium", "mobilenetv4"),
    "MNv4-Conv-L": ("timm:mobilenetv4_conv_large", "mobilenetv4"),
    "MNv4-Hybrid-L": ("timm:mobilenetv4_hybrid_large", "mobilenetv4"),
}

# Why the remaining names are skipped (prefix → reason); anything else: no definition available.
SKIP_REASONS: tuple[tuple[str, str], ...] = (
    ("iFormer ablation", "ablation variant of iFormer: no released definition"),
    ("iFormer-M ablation", "ablation variant of iFormer: no released definition"),
    ("iFormer trajectory", "design-trajectory variant of iFormer: no released definition"),
    ("iFormer-M Hybrid", "windowed iFormer variant: no released definition"),
    ("iFormer-M Channel-Chunk", "iFormer _faster variant: not in timm"),
    ("iFormer-M (backbone", "iFormer _faster variant: not in timm"),
    ("iFormer-L2 (backbone", "iFormer _faster variant: not in timm"),
    ("MultiHardware", "NAS model without a public definition"),
    ("MNv4 ", "ablation/NAS model without a public definition"),
    ("RetinaNet", "full detector: only backbones are buildable"),
)


@dataclass(frozen=True)
class CsvRow:
    """One row of the published latency table."""

    index: int  # 0-based data row number in the CSV
    model: str
    resolution: int | None
    device: str
    runtime: str
    latency_ms: float
    source: str

    @property
    def backbone(self) -> bool:
        return "backbone" in self.runtime.lower() or "(backbone" in self.model.lower()


#: the columns ``read_csv`` reads (others, such as params_M or top1, are allowed and ignored)
COLUMNS = ("model", "resolution", "device", "runtime/compute_unit", "latency_ms", "source")
MAX_CSV_BYTES = 64 * 2**20


def read_csv(path: str | Path | None = None) -> tuple[list[CsvRow], str]:
    """All usable rows of the published latency CSV and the file's sha256.

    The header must name every column in :data:`COLUMNS` (one-line error listing the missing ones and the
    expected header). A row is skipped when its latency is not a positive finite number or its model or device
    is empty; its resolution is kept when it is a whole number ≥ 1.
    """
    from hybridexport.jsonfile import read_bytes

    p = Path(path) if path else DEFAULT_CSV
    hint = "pass --data PATH to published_latency.csv"
    data = read_bytes(p, "calibration data", hint, limit=MAX_CSV_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"calibration data '{p}' is not UTF-8 text (byte {exc.start}); {hint}") from None
    header = f"expected a header with {','.join(COLUMNS)}"
    reader = csv.DictReader(text.splitlines())
    try:
        fields = [f.strip() for f in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in fields]
        if missing:
            raise InputFileError(f"calibration data '{p}' lacks the column(s) {', '.join(missing)}; {header} "
                                 "(the layout of published_latency.csv)")
        reader.fieldnames = fields
        rows = []
        for i, r in enumerate(reader):
            row = _row(i, r)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        raise InputFileError(f"calibration data '{p}' is not a readable CSV (line {reader.line_num}: {exc}); "
                             f"{header}") from None
    return rows, hashlib.sha256(data).hexdigest()


def _row(i: int, r: dict[str | None, Any]) -> CsvRow | None:
    """One CSV row, or None when it cannot be a calibration point (short rows read as empty fields)."""
    def get(key: str) -> str:
        v = r.get(key)
        return v.strip() if isinstance(v, str) else ""

    try:
        lat = float(get("latency_ms"))
    except ValueError:
        return None
    model, device = get("model"), get("device")
    if not (math.isfinite(lat) and lat > 0 and model and device):
        return None
    res = get("resolution")
    resolution = int(res) if res.isascii() and res.isdigit() and len(res) <= 5 and 0 < int(res) <= 16384 else None
    return CsvRow(i, model, resolution, device, get("runtime/compute_unit"), lat, get("source"))


def select_rows(rows: list[CsvRow], calibration: dict[str, Any]) -> list[CsvRow]:
    """The rows a device's ``calibration`` key selects: exact device name and runtime prefix.

    ``calibration.match`` must be a list of ``{"device": str, "runtime_prefix": str}`` (one-line error otherwise).
    """
    matches = calibration.get("match", [])
    if not isinstance(matches, list) or not all(
            isinstance(m, dict) and isinstance(m.get("device"), str) and isinstance(m.get("runtime_prefix", ""), str)
            for m in matches):
        raise InputFileError("the device profile's calibration.match must be a list of {\"device\": NAME, "
                             "\"runtime_prefix\": PREFIX} naming rows of published_latency.csv; see "
                             "profiles/iphone13.json")
    out = []
    for r in rows:
        for m in matches:
            if r.device == m["device"] and r.runtime.startswith(m.get("runtime_prefix", "")):
                out.append(r)
                break
    return out


def resolve_row(row: CsvRow) -> tuple[str | None, str, str]:
    """(builder id or None, family, skip reason) for a CSV row."""
    if row.resolution is None:
        return None, "", "no input resolution given"
    hit = CATALOG.get(row.model)
    if hit is not None:
        return hit[0], hit[1], ""
    for prefix, why in SKIP_REASONS:
        if row.model.startswith(prefix):
            return None, "", why
    return None, "", "no definition in timm, torchvision or the zoo"
