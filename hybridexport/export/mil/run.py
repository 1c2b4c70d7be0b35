"""``run_package``: a saved ``.mlpackage`` run on inputs, with the contract of ``CoreML.run`` (hybridexport.export.formats.coreml).

Each sample is the model's input as PyTorch sees it: one array for a one-input model (a sequence or a
name → array mapping for several). An image input takes the *normalised* tensor the PyTorch model
sees; it becomes the pixels Core ML would receive by inverting the program's own preprocessing
(``<input>__scaled__`` and ``<input>__biased__``, inserted by coremltools), rounded and clipped to
0..255 as an 8-bit image is, in the program's channel order. Outputs come back as float32 arrays in
the order of the spec's outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridexport.export.mil.errors import FeedError
from hybridexport.export.mil.program import Package, load_package


def run_package(path: str | Path, inputs: Sequence[Any]) -> list[list[np.ndarray]]:
    """Interpret the package at ``path`` on each sample of ``inputs``; outputs per sample, spec order.

    Raises :class:`~hybridexport.export.mil.errors.NotInterpreted` (before running anything) when the
    program uses an op type without a kernel.
    """
    from hybridexport.export.mil.interpreter import Interpreter

    pkg = load_package(path)
    interp = Interpreter(pkg.program)
    names = [o.name for o in pkg.outputs]
    missing = [n for n in names if n not in interp.output_names]
    if missing:
        raise FeedError(f"spec outputs {missing} are not outputs of the program's main function")
    results = []
    for sample in inputs:
        res = interp.run(feeds(pkg, sample))
        results.append([np.asarray(res.outputs[n], dtype=np.float32) for n in names])
    return results


def feeds(pkg: Package, sample: Any) -> dict[str, np.ndarray]:
    """One sample (array, sequence or mapping) → the program's feeds by input name (images as pixels)."""
    names = [f.name for f in pkg.inputs]
    if isinstance(sample, Mapping):
        values = dict(sample)
    elif len(names) == 1:
        values = {names[0]: sample}
    else:
        seq = list(sample)
        if len(seq) != len(names):
            raise FeedError(f"the model takes {len(names)} inputs ({', '.join(names)}), a sample has {len(seq)}")
        values = dict(zip(names, seq, strict=True))
    out = {}
    for f in pkg.inputs:
        if f.name not in values:
            raise FeedError(f"no value for input '{f.name}'; the model takes {', '.join(names)}")
        x = np.asarray(values[f.name])
        out[f.name] = image_pixels(pkg.main, f.name, x) if f.kind == "image" else x
    return out


def image_scale_bias(function: Any, name: str) -> tuple[float, np.ndarray]:
    """The ``x = pixel · scale + bias`` of image input ``name``, read from the program's preprocessing ops."""
    scale, bias = 1.0, np.zeros(1)
    for op in function.operations:
        if op.name == f"{name}__scaled__" and op.op_type == "mul":
            scale = float(np.asarray(op.inputs["y"].val).reshape(-1)[0])
        elif op.name == f"{name}__biased__" and op.op_type == "add":
            bias = np.asarray(op.inputs["y"].val, dtype=np.float64)
    return scale, bias


def image_pixels(function: Any, name: str, x: np.ndarray) -> np.ndarray:
    """Normalised ``x`` → the 0..255 integer pixels that the program's preprocessing maps to it."""
    scale, bias = image_scale_bias(function, name)
    if bias.ndim and x.ndim != bias.ndim:
        bias = bias.reshape((1,) * (x.ndim - bias.ndim) + bias.shape)
    pixels = np.rint((x.astype(np.float64) - bias) / scale)
    return np.clip(pixels, 0, 255).astype(np.float32)


def uninterpreted_ops(path: str | Path) -> list[str]:
    """Op types of the package's ``main`` that have no kernel (empty when it can be interpreted)."""
    from hybridexport.export.mil.interpreter import uninterpreted

    return uninterpreted(load_package(path).main)


def supported_ops() -> list[str]:
    """Every MIL op type the interpreter has a kernel for."""
    from hybridexport.export.mil import kernels  # noqa: F401  (registers them)
    from hybridexport.export.mil.registry import KERNELS

    return sorted(KERNELS)
