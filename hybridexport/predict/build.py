"""Build a catalog model and export it in a device's format, only to read its per-op features.

Models are built in deployment form (``timm.utils.reparameterize_model``: MobileOne/FastViT/RepViT
branches folded), as the published latencies were measured. Exports follow the published protocols:
Core ML ML Program with default (FP16) precision, TFLite via litert-torch, ONNX via the dynamo exporter.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from hybridexport.errors import ConversionError
from hybridexport.predict.features import FeatureTable, OpFeature


def build_module(builder: str, backbone: bool = False, resolution: int | None = None) -> nn.Module:
    """An eval-mode, reparameterized module for a builder id (zoo name, ``tv:...`` or ``timmgen:...``);
    a timm definition sized for its input (attention biases) is built for ``resolution``."""
    import hybridexport._tvshim  # noqa: F401  (before timm/torchvision)

    torch.manual_seed(0)
    if builder.startswith("tv:"):
        import torchvision

        module = getattr(torchvision.models, builder[3:])(weights=None)
    elif builder.startswith("timmgen:"):
        _, gen, width = builder.split(":")
        mult = float(width)
        variant = f"{gen}_{int(round(mult * 100)):03d}"
        if gen == "mobilenetv2":
            from timm.models.efficientnet import _gen_mobilenet_v2

            module = _gen_mobilenet_v2(variant, mult)
        elif gen == "mobilenetv3_large":
            from timm.models.mobilenetv3 import _gen_mobilenet_v3

            module = _gen_mobilenet_v3(variant, mult)
        else:
            raise ConversionError(f"unknown timm generator '{gen}' in builder '{builder}'")
    else:
        from hybridexport.zoo import build_model

        module = build_model(builder, resolution=resolution).module
    from timm.utils.model import reparameterize_model

    module = reparameterize_model(module.eval())
    if backbone and hasattr(module, "reset_classifier"):
        module.reset_classifier(0)
    return module.eval()


RAW_SUFFIX = {"coreml": ".mlspec", "tflite": ".tflite", "onnx": ".onnx"}


def export_features(module: nn.Module, fmt: str, resolution: int, workdir: str | Path | None = None,
                    keep: Path | None = None) -> list[OpFeature]:
    """Export ``module`` at ``resolution`` to ``fmt`` (coreml | tflite | onnx) and extract its features.

    ``keep``: also save the exported graph there (Core ML: the spec without weights) so features can be
    re-extracted later without converting again (:func:`features_from_raw`)."""
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if fmt == "coreml":
            return _coreml(module, x, keep)
        path = Path(tmp) / f"m{RAW_SUFFIX.get(fmt, '')}"
        if fmt == "tflite":
            ops = _tflite(module, x, path)
        elif fmt == "onnx":
            ops = _onnx(module, x, path)
        else:
            raise ConversionError(f"unknown format '{fmt}' (expected coreml, tflite or onnx)")
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep)
        return ops


def features_from_raw(path: Path, fmt: str) -> list[OpFeature]:
    """Features of a graph saved by :func:`export_features` (``keep``)."""
    if fmt == "coreml":
        from coremltools.proto import Model_pb2

        from hybridexport.predict.extract_mil import mil_features

        spec = Model_pb2.Model()
        spec.ParseFromString(path.read_bytes())
        return mil_features(spec)
    from hybridexport.predict.predictor import features_of_artifact

    return features_of_artifact(path, fmt)


def _coreml(module: nn.Module, x: torch.Tensor, keep: Path | None = None) -> list[OpFeature]:
    import coremltools as ct

    from hybridexport.predict.extract_mil import mil_features

    try:
        ep = torch.export.export(module, (x,)).run_decompositions({})
        mlm = ct.convert(ep, convert_to="mlprogram", skip_model_load=True)
    except Exception:  # noqa: BLE001 (fall back to the TorchScript path the papers used)
        traced = torch.jit.trace(module, x)
        mlm = ct.convert(traced, inputs=[ct.TensorType(shape=tuple(x.shape))], convert_to="mlprogram",
                         skip_model_load=True)
    spec = mlm.get_spec()
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(spec.SerializeToString())
    return mil_features(spec)


def _tflite(module: nn.Module, x: torch.Tensor, path: Path) -> list[OpFeature]:
    import litert_torch

    from hybridexport.predict.extract_tflite import tflite_features

    litert_torch.convert(module, (x,)).export(str(path))
    return tflite_features(path)


def _onnx(module: nn.Module, x: torch.Tensor, path: Path) -> list[OpFeature]:
    from hybridexport.predict.extract_onnx import load_onnx, onnx_features

    prog = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
    prog.save(str(path))
    return onnx_features(load_onnx(path))


def feature_table(builder: str, fmt: str, resolution: int, backbone: bool = False,
                  keep: Path | None = None) -> FeatureTable:
    module = build_module(builder, backbone=backbone, resolution=resolution)
    with torch.no_grad():
        ops = export_features(module, fmt, resolution, keep=keep)
    return FeatureTable(model=builder, format=fmt, resolution=resolution, ops=ops, backbone=backbone)


def default_resolution(builder: str) -> int:
    """The model's own default input resolution (224 for torchvision and generated widths)."""
    if builder.startswith(("tv:", "timmgen:")):
        return 224
    from hybridexport.zoo import resolve

    return int(resolve(builder).resolution)
