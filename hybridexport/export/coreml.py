"""Core ML: an ML Program ``.mlpackage`` from a ``torch.jit.trace``d model (coremltools 9.0).

Defaults follow the protocol behind the published iPhone latencies (iFormer's export_coreml.py):
``ct.convert`` of the traced model, FP16 compute precision, ``ComputeUnit.ALL``,
``minimum_deployment_target=iOS15``. fp32 uses FLOAT32 compute; int8 adds
``ct.optimize.coreml.linear_quantize_weights`` (symmetric per-channel int8 weights, fp16 compute), which
needs iOS16 (``constexpr_affine_dequantize``). ``image_input`` makes the input an RGB ``ImageType``
that maps pixels 0..255 to ImageNet-normalised values.

Core ML prediction needs macOS. On Linux the saved package is checked structurally (spec loads, input
and output names/shapes match PyTorch, MIL op histogram, rank-5 tensors, weight dtypes); on macOS
(``sys.platform == "darwin"``) ``MLModel.predict`` runs for real and parity is computed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridexport.errors import ConversionError
from hybridexport.export.base import Built, NotRunnableHere, histogram

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions

INPUT_NAME = "input"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: iOS target → Core ML specification version (ML Program needs >= 6).
SPEC_VERSIONS = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9}


def image_params() -> dict[str, Any]:
    """Scale and per-channel bias of the ImageType: ``x = pixel * scale + bias`` ≈ (pixel/255 - mean) / std."""
    std = float(np.mean(IMAGENET_STD))
    return {
        "scale": 1.0 / (255.0 * std),
        "bias": [-m / std for m in IMAGENET_MEAN],
        "color_layout": "RGB",
    }


def build(module: nn.Module, example: torch.Tensor, path: Path, opts: ExportOptions) -> Built:
    """Trace ``module``, convert to an ML Program and save it at ``path`` (.mlpackage)."""
    import coremltools as ct
    import torch

    from hybridexport.export.verify import flatten_outputs

    target = opts.resolved_coreml_target
    with torch.no_grad():
        ref_shapes = [list(a.shape) for a in flatten_outputs(module(example))]
    t0 = time.perf_counter()
    traced = torch.jit.trace(module, example, check_trace=False)
    if opts.coreml_image_input:
        p = image_params()
        inp = ct.ImageType(
            name=INPUT_NAME, shape=tuple(example.shape), scale=p["scale"], bias=p["bias"],
            color_layout=ct.colorlayout.RGB,
        )
    else:
        inp = ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape))
    mlmodel = ct.convert(
        traced,
        inputs=[inp],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32 if opts.precision == "fp32" else ct.precision.FLOAT16,
        compute_units=ct.ComputeUnit.ALL,
        minimum_deployment_target=getattr(ct.target, target),
    )
    converter_seconds = time.perf_counter() - t0
    extra: dict[str, Any] = {
        "coreml_target": target,
        "compute_precision": "FLOAT32" if opts.precision == "fp32" else "FLOAT16",
        "compute_units": "ALL",
        "traced_with": "torch.jit.trace",
    }
    if opts.coreml_image_input:
        extra["image_input"] = image_params()
    if opts.precision == "int8":
        cfg = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel"
            )
        )
        mlmodel = ct.optimize.coreml.linear_quantize_weights(mlmodel, config=cfg)
        extra["quantization"] = "linear_quantize_weights: int8 symmetric per-channel weights, fp16 compute"
    mlmodel.save(str(path))
    structure = inspect(path)
    check_structure(structure, list(example.shape), ref_shapes, target)
    extra["structure"] = {k: v for k, v in structure.items() if k != "ops"}
    return Built(ops=structure["ops"], rank5_tensors=structure["rank5_tensors"],
                 converter_seconds=converter_seconds, extra=extra)


def inspect(path: Path) -> dict[str, Any]:
    """Structure of a saved ``.mlpackage`` read from its spec: ops, shapes, rank-5 tensors, weight dtypes."""
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ConversionError(f"{path.name}: not an ML Program (got {spec.WhichOneof('Type')}); re-run convert")
    ops: Counter = Counter()
    consts: Counter = Counter()
    rank5 = 0
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in _walk(block):
                for out in op.outputs:
                    tt = out.type.tensorType
                    if op.type == "const":
                        consts[MIL_pb2.DataType.Name(tt.dataType)] += 1
                    elif tt.rank >= 5:
                        rank5 += 1
                if op.type != "const":
                    ops[op.type] += 1
    return {
        "spec_version": int(spec.specificationVersion),
        "model_type": "mlProgram",
        "inputs": [_feature(f) for f in spec.description.input],
        "outputs": [_feature(f) for f in spec.description.output],
        "ops": histogram(ops),
        "op_count": int(sum(ops.values())),
        "const_dtypes": dict(consts),
        "rank5_tensors": rank5,
    }


def _walk(block: Any) -> list[Any]:
    ops = []
    for op in block.operations:
        ops.append(op)
        for sub in op.blocks:
            ops.extend(_walk(sub))
    return ops


def _feature(f: Any) -> dict[str, Any]:
    kind = f.type.WhichOneof("Type")
    if kind == "multiArrayType":
        return {"name": f.name, "type": "tensor", "shape": [int(s) for s in f.type.multiArrayType.shape]}
    if kind == "imageType":
        im = f.type.imageType
        return {"name": f.name, "type": "image", "shape": [1, 3, int(im.height), int(im.width)]}
    return {"name": f.name, "type": kind or "unknown", "shape": []}


def check_structure(structure: dict[str, Any], input_shape: list[int], output_shapes: list[list[int]],
                    target: str) -> None:
    """Raise ConversionError when the saved program does not have the interface PyTorch has."""
    problems = []
    if structure["spec_version"] < SPEC_VERSIONS[target]:
        problems.append(f"spec version {structure['spec_version']} < {SPEC_VERSIONS[target]} for {target}")
    ins = structure["inputs"]
    if len(ins) != 1 or ins[0]["shape"] != input_shape:
        problems.append(f"inputs {[i['shape'] for i in ins]} != PyTorch {[input_shape]}")
    outs = [o["shape"] for o in structure["outputs"]]
    if len(outs) != len(output_shapes) or any(
        o and list(o) != list(r) for o, r in zip(outs, output_shapes)
    ):
        problems.append(f"outputs {outs} != PyTorch {output_shapes}")
    if not structure["ops"]:
        problems.append("the program has no ops")
    if problems:
        raise ConversionError("Core ML structural check failed: " + "; ".join(problems))


def structure_summary(structure: dict[str, Any]) -> str:
    """One line describing what the structural check saw."""
    i = structure["inputs"][0]
    outs = ", ".join(f"'{o['name']}' {tuple(o['shape'])}" for o in structure["outputs"])
    consts = ", ".join(f"{k.lower()} x{v}" for k, v in sorted(structure["const_dtypes"].items()))
    return (
        f"ML Program spec v{structure['spec_version']}, input '{i['name']}' {i['type']} {tuple(i['shape'])}, "
        f"output {outs}, {structure['op_count']} MIL ops in {len(structure['ops'])} types, "
        f"{structure['rank5_tensors']} rank-5 tensors, consts: {consts}"
    )


def run(path: Path, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """``MLModel.predict`` outputs for each input (macOS only; elsewhere raise NotRunnableHere)."""
    structure = inspect(path)
    if sys.platform != "darwin":
        raise NotRunnableHere(f"Core ML prediction needs macOS; checked structurally: {structure_summary(structure)}")
    import coremltools as ct

    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
    inp = structure["inputs"][0]
    out_names = [o["name"] for o in structure["outputs"]]
    results = []
    for x in inputs:
        feed = _to_image(x) if inp["type"] == "image" else np.ascontiguousarray(x, dtype=np.float32)
        pred = model.predict({inp["name"]: feed})
        results.append([np.asarray(pred[n], dtype=np.float32) for n in out_names])
    return results


def reference_inputs(opts: ExportOptions, shape: list[int], n: int) -> list[torch.Tensor] | None:
    """With an image input, verify on random pixel images (as the model sees them); else None (default inputs)."""
    if not opts.coreml_image_input:
        return None
    import torch

    from hybridexport.export.verify import VERIFY_SEED_BASE

    p = image_params()
    bias = torch.tensor(p["bias"]).view(1, 3, 1, 1)
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(VERIFY_SEED_BASE + i)
        pixels = torch.randint(0, 256, tuple(shape), generator=g).float()
        out.append(pixels * p["scale"] + bias)
    return out


def _to_image(x: np.ndarray) -> Any:
    """Invert :func:`reference_inputs`: normalised (1, 3, H, W) → the RGB PIL image Core ML expects."""
    from PIL import Image

    p = image_params()
    bias = np.asarray(p["bias"], dtype=np.float64).reshape(1, 3, 1, 1)
    pixels = np.clip(np.rint((x.astype(np.float64) - bias) / p["scale"]), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[0].transpose(1, 2, 0), mode="RGB")
