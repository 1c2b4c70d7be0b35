"""Map runtime rows (ORT nodes, XNNPACK ops, TFLite ops, Core ML ops) back to nn.Module paths.

Every runtime renames and fuses ops, so each runner finds a row's module one of three ways:

* **metadata**: the name carries the path (ONNX ``pkg.torch.onnx.name_scopes``; litert-torch tensor
  names such as ``pkg.Net/pkg.Block_stem/torch.nn.modules.conv.Conv2d_conv``);
* **debug handles**: ExecuTorch events name the edge-graph nodes they ran (``nn_module_stack``);
* **alignment**: delegates (XNNPACK inside ExecuTorch or TFLite) report their own op names in
  execution order; :func:`align` walks them against the source graph's ops in topological order and
  pairs each with the next source op of a compatible kind. Ops the delegate inserted itself
  (layout transposes, copies) take the module of the source op they feed.

Module-path conventions and parsers are :mod:`hybridexport.modpath`'s (``ROOT`` is the model itself,
``""`` unmapped); this module holds what runners need to align runtime rows with graph ops.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Canonical op kinds, from the aten op name (without the "aten." prefix and the overload).
_ATEN_KINDS: dict[str, str] = {
    "convolution": "conv", "conv2d": "conv", "conv1d": "conv", "conv_transpose2d": "conv",
    "linear": "matmul", "addmm": "matmul", "mm": "matmul", "bmm": "matmul", "matmul": "matmul", "baddbmm": "matmul",
    "gelu": "gelu", "sigmoid": "sigmoid", "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "tanh": "tanh",
    "silu": "silu", "hardtanh": "clamp", "relu": "clamp", "relu6": "clamp", "clamp": "clamp", "leaky_relu": "leaky_relu",
    "_softmax": "softmax", "softmax": "softmax", "add": "add", "mul": "mul", "sub": "sub", "rsub": "sub", "div": "div",
    "maximum": "max", "minimum": "min", "sqrt": "sqrt", "rsqrt": "rsqrt", "pow": "pow", "exp": "exp", "log": "log",
    "abs": "abs", "neg": "neg", "permute": "transpose", "permute_copy": "transpose", "transpose": "transpose",
    "transpose_copy": "transpose", "t": "transpose", "t_copy": "transpose", "_clone_dim_order": "transpose",
    "_to_dim_order_copy": "transpose", "view": "reshape", "view_copy": "reshape", "reshape": "reshape",
    "_unsafe_view": "reshape", "squeeze": "reshape", "squeeze_copy": "reshape", "unsqueeze": "reshape",
    "unsqueeze_copy": "reshape", "expand": "reshape", "expand_copy": "reshape", "clone": "reshape",
    "flatten": "reshape", "constant_pad_nd": "pad", "pad": "pad", "cat": "concat", "slice": "slice",
    "slice_copy": "slice", "split": "slice", "split_with_sizes": "slice", "split_with_sizes_copy": "slice",
    "select": "slice", "select_copy": "slice", "narrow": "slice", "avg_pool2d": "pool_avg",
    "adaptive_avg_pool2d": "pool_avg", "max_pool2d": "pool_max", "max_pool2d_with_indices": "pool_max",
    "mean": "mean", "sum": "sum", "upsample_bilinear2d": "resize", "upsample_nearest2d": "resize",
    "_to_copy": "convert", "native_layer_norm": "layernorm", "layer_norm": "layernorm",
    "_native_batch_norm_legit_no_training": "batchnorm", "batch_norm": "batchnorm",
    "native_batch_norm": "batchnorm",
}

# XNNPACK operator names (the text before " (" in e.g. "Convolution (NHWC, F32) IGEMM #3") → kinds.
_XNN_KINDS: dict[str, set[str]] = {
    "convolution": {"conv"}, "deconvolution": {"conv"}, "fully connected": {"matmul", "conv"},
    "batch matrix multiply": {"matmul"}, "dynamic fully connected": {"matmul"}, "gelu": {"gelu"},
    "sigmoid": {"sigmoid"}, "hardswish": {"hardswish"}, "tanh": {"tanh"}, "clamp": {"clamp"},
    "leaky relu": {"leaky_relu"}, "softmax": {"softmax"}, "add": {"add"}, "multiply": {"mul"},
    "subtract": {"sub"}, "divide": {"div"}, "maximum": {"max"}, "minimum": {"min"}, "square root": {"sqrt"},
    "reciprocal square root": {"rsqrt"}, "square": {"pow", "mul"}, "exp": {"exp"}, "log": {"log"},
    "abs": {"abs"}, "negate": {"neg"}, "transpose": {"transpose"}, "copy": {"reshape", "transpose"},
    "constant pad": {"pad"}, "concatenate": {"concat"}, "slice": {"slice"}, "average pooling": {"pool_avg"},
    "global average pooling": {"pool_avg", "mean"}, "mean": {"mean", "pool_avg"}, "sum": {"sum"},
    "max pooling": {"pool_max"}, "resize bilinear": {"resize"}, "convert": {"convert"},
    "layer norm": {"layernorm"}, "static reshape": {"reshape"}, "static transpose": {"transpose"},
    "static slice": {"slice"}, "static constant pad": {"pad"}, "even split": {"slice"},
    "copy sign": {"mul"}, "floor": {"floor"}, "ceiling": {"ceil"}, "bankers rounding": {"round"},
}

# Source-op kinds that carry real work: a runtime op may not silently skip many of these while
# looking for its match (layout ops, norms folded into convs, clamps fused into outputs may be skipped).
STRONG_KINDS = {
    "conv", "matmul", "gelu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "silu", "softmax", "add", "mul",
    "sub", "div", "max", "min", "sqrt", "rsqrt", "pow", "exp", "log", "abs", "neg", "layernorm", "mean", "sum",
    "pool_avg", "pool_max", "resize", "concat", "leaky_relu",
}
# Runtime ops that delegates insert on their own (layout changes): they match only the very next work.
WEAK_RUNTIME_KINDS = ({"transpose"}, {"reshape"}, {"reshape", "transpose"})

# TFLite builtin operator names → kind.
_TFLITE_KINDS: dict[str, str] = {
    "CONV_2D": "conv", "DEPTHWISE_CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "FULLY_CONNECTED": "matmul",
    "BATCH_MATMUL": "matmul", "GELU": "gelu", "LOGISTIC": "sigmoid", "HARD_SWISH": "hardswish", "TANH": "tanh",
    "RELU": "clamp", "RELU6": "clamp", "RELU_N1_TO_1": "clamp", "RELU_0_TO_1": "clamp", "SOFTMAX": "softmax",
    "ADD": "add", "MUL": "mul", "SUB": "sub", "DIV": "div", "MAXIMUM": "max", "MINIMUM": "min", "SQRT": "sqrt",
    "RSQRT": "rsqrt", "SQUARE": "pow", "POW": "pow", "EXP": "exp", "LOG": "log", "ABS": "abs", "NEG": "neg",
    "TRANSPOSE": "transpose", "RESHAPE": "reshape", "SQUEEZE": "reshape", "EXPAND_DIMS": "reshape", "PAD": "pad",
    "PADV2": "pad", "CONCATENATION": "concat", "SLICE": "slice", "STRIDED_SLICE": "slice", "SPLIT": "slice",
    "SPLIT_V": "slice", "GATHER": "slice", "AVERAGE_POOL_2D": "pool_avg", "MAX_POOL_2D": "pool_max",
    "MEAN": "mean", "SUM": "sum", "RESIZE_BILINEAR": "resize", "RESIZE_NEAREST_NEIGHBOR": "resize",
    "QUANTIZE": "convert", "DEQUANTIZE": "convert", "CAST": "convert",
}


def aten_kind(target: str) -> str:
    """``aten.convolution.default`` / ``aten_convolution_default`` → ``conv`` (unknown ops keep their name)."""
    t = str(target)
    for prefix in ("aten.", "dim_order_ops.", "quantized_decomposed."):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    base = t.split(".")[0]
    return _ATEN_KINDS.get(base, base)


def tflite_kind(op_name: str) -> str:
    return _TFLITE_KINDS.get(op_name.upper(), op_name.lower())


def xnn_base(name: str) -> str:
    """``Delegate/Convolution (NHWC, F32) IGEMM:3`` or ``Add (ND) #1`` → ``convolution`` / ``add``."""
    n = name.split("/", 1)[1] if name.startswith("Delegate/") else name
    n = n.split(" (", 1)[0]
    n = re.sub(r"\s*(#\d+|:\d+)$", "", n)
    return n.strip().lower()


def xnn_kinds(name: str) -> set[str]:
    base = xnn_base(name)
    return _XNN_KINDS.get(base, {base})


def is_xnnpack_op(name: str) -> bool:
    """True for XNNPACK operator names such as ``Convolution (NHWC, F32) IGEMM #1``."""
    return bool(re.match(r"^(Delegate/)?[A-Z][A-Za-z ]+ \((N[A-Z]+|ND|NC)[,)]", name))


def align(
    runtime_kinds: Sequence[set[str]],
    graph_kinds: Sequence[str],
    window: int = 24,
    max_strong_skips: int = 2,
) -> list[int | None]:
    """Pair each runtime op (its acceptable kinds) with the index of a source op, walking forward.

    Returns, per runtime op, the index of the matched source op or None (an op the runtime inserted).
    The search looks at most ``window`` source ops ahead and gives up after passing
    ``max_strong_skips`` unmatched compute ops (none for layout ops such as ``Transpose``, which
    delegates insert on their own), so one spurious match cannot jump over whole blocks.
    """
    out: list[int | None] = []
    j = 0
    for kinds in runtime_kinds:
        hit = None
        budget = 0 if kinds in WEAK_RUNTIME_KINDS else max_strong_skips
        for k in range(j, min(len(graph_kinds), j + window)):
            if graph_kinds[k] in kinds:
                hit = k
                break
            if graph_kinds[k] in STRONG_KINDS:
                budget -= 1
                if budget < 0:
                    break
        out.append(hit)
        if hit is not None:
            j = hit + 1
    return out


def aligned_modules(matches: Sequence[int | None], graph_modules: Sequence[str]) -> list[str]:
    """Modules for :func:`align` results: unmatched ops take the next matched source op's module."""
    out: list[str] = [""] * len(matches)
    nxt = ""
    for i in range(len(matches) - 1, -1, -1):
        m = matches[i]
        if m is not None:
            nxt = graph_modules[m]
        out[i] = nxt
    last = ""
    for i, m in enumerate(matches):  # trailing inserted ops (output layout conversion): previous module
        if m is not None:
            last = graph_modules[m]
        elif not out[i]:
            out[i] = last
    return out
