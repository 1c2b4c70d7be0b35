"""Calibration models, converted the way a user's ``convert`` converts them, for their op tables.

Models are exported in deployment form — the ``reparameterize`` pass only (MobileOne/FastViT/RepViT
branches folded by the model's own methods; the converters fold BatchNorm themselves), as the published
latencies were measured — through :func:`hybridexport.export.convert`, so calibration reads exactly the
op table that ``hybridexport convert MODEL --passes reparameterize`` writes. Artifacts are cached under
``~/.cache/hybridexport/calibrate/artifacts`` (``$HYBRIDEXPORT_CACHE``), reused while their inputs are
unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hybridexport.errors import ConversionError

if TYPE_CHECKING:
    from hybridexport.export.manifest import Manifest
    from hybridexport.optable import OpTable
    from hybridexport.zoo import LoadedModel

DEPLOY_PASSES = ("reparameterize",)


def cache_dir() -> Path:
    base = os.environ.get("HYBRIDEXPORT_CACHE") or Path.home() / ".cache" / "hybridexport"
    return Path(base) / "calibrate"


def loaded_model(builder: str, resolution: int | None = None, backbone: bool = False) -> LoadedModel:
    """The model of a builder id (zoo name, ``tv:<torchvision name>`` or ``timmgen:<generator>:<width>``),
    eval mode, seeded random weights; ``backbone`` drops the classifier head."""
    import hybridexport._tvshim  # noqa: F401  (before timm/torchvision)

    import torch

    from hybridexport.zoo import LoadedModel, ModelSpec, build_model

    torch.manual_seed(0)
    if builder.startswith(("tv:", "timmgen:")):
        module = _builder_module(builder)
        res = int(resolution or 224)
        loaded = LoadedModel(spec=ModelSpec(name=builder, family="calibration", variant=builder, resolution=224,
                                            source=builder), module=module.eval(), resolution=res)
    else:
        loaded = build_model(builder, resolution=resolution)
    if backbone and hasattr(loaded.module, "reset_classifier"):
        loaded.module.reset_classifier(0)
        from dataclasses import replace

        loaded = replace(loaded, spec=replace(loaded.spec, name=f"{loaded.spec.name}-backbone"))
    return loaded


def _builder_module(builder: str):  # -> nn.Module
    if builder.startswith("tv:"):
        import torchvision

        return getattr(torchvision.models, builder[3:])(weights=None)
    _, gen, width = builder.split(":")
    mult = float(width)
    variant = f"{gen}_{int(round(mult * 100)):03d}"
    if gen == "mobilenetv2":
        from timm.models.efficientnet import _gen_mobilenet_v2

        return _gen_mobilenet_v2(variant, mult)
    if gen == "mobilenetv3_large":
        from timm.models.mobilenetv3 import _gen_mobilenet_v3

        return _gen_mobilenet_v3(variant, mult)
    raise ConversionError(f"unknown timm generator '{gen}' in builder '{builder}'")


def deploy_artifact(builder: str, fmt: str, precision: str | None = None, resolution: int | None = None,
                    backbone: bool = False, out: Path | None = None) -> Manifest:
    """The builder's artifact in ``fmt`` in deployment form (converted now unless cached).

    Kept even when its parity fails: calibration reads the graph, and an untrained model's fp16
    activations can fall below fp16's normal range (its parity is still recorded in the manifest)."""
    from hybridexport.export import convert

    loaded = loaded_model(builder, resolution, backbone)
    [man] = convert(loaded, to=fmt, out=out or cache_dir() / "artifacts", precision=precision,
                    passes=list(DEPLOY_PASSES), verify_inputs=1, keep_mismatch=True)
    return man


def deploy_table(builder: str, fmt: str, precision: str | None = None, resolution: int | None = None,
                 backbone: bool = False, out: Path | None = None) -> OpTable:
    """The op table of :func:`deploy_artifact`."""
    from hybridexport.optable import OpTable

    return OpTable.load(deploy_artifact(builder, fmt, precision, resolution, backbone, out).op_table_path())


def default_resolution(builder: str) -> int:
    """The model's own default input resolution (224 for torchvision and generated widths)."""
    if builder.startswith(("tv:", "timmgen:")):
        return 224
    from hybridexport.zoo import resolve

    return int(resolve(builder).resolution)
