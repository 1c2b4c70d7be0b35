"""The interpreter end to end on small models written here: parity with PyTorch, faults it must catch, overflow.

Tolerances: an fp32 program must match PyTorch within 1e-4 relative L2 (the fp32 parity tolerance; it
lands near 1e-6). An fp16 program must match within 1e-2, the fp16 parity tolerance ``convert``
uses: fp16 has a unit roundoff of 2^-11 ≈ 4.9e-4, every op rounds its output once, and those errors
grow with depth, so a few-dozen-op network lands at 1e-4 .. 3e-3; 1e-2 (≈ 20 roundoffs) leaves room
for conditioning without letting a real fault (a wrong weight, axis or permutation: errors of order 1)
pass. The fp16 error must also be far above the fp32 one, or fp16 rounding was not applied.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

ct = pytest.importorskip("coremltools")

from hybridexport.export import formats  # noqa: E402
from hybridexport.export.mil import PackageError, run_package  # noqa: E402
from hybridexport.export.mil.interpreter import Interpreter  # noqa: E402
from hybridexport.export.mil.precision import module_report  # noqa: E402
from hybridexport.export.mil.program import load_package  # noqa: E402
from hybridexport.export.options import TOLERANCE, ExportOptions  # noqa: E402
from hybridexport.export.quiet import converter_output  # noqa: E402
from hybridexport.export.verify import compare, reference_outputs, verification_inputs  # noqa: E402

torch.manual_seed(0)


class ConvNet(nn.Module):
    """conv/BN/ReLU6, dilated depthwise stride-2, hard-swish, SE, ceil-mode pools, upsampling; two outputs."""

    def __init__(self, c: int = 48) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU6())
        self.dw = nn.Conv2d(c, c, 3, 2, 2, dilation=2, groups=c)
        self.pw = nn.Conv2d(c, 2 * c, 1)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * c, 8, 1), nn.ReLU(), nn.Conv2d(8, 2 * c, 1),
                                nn.Sigmoid())
        self.pool = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.head = nn.Linear(2 * c, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        y = nn.functional.hardswish(self.pw(self.dw(x)))
        y = y * self.se(y)
        z = self.pool(y) + self.maxpool(y)
        up = nn.functional.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(z.mean((2, 3))).softmax(-1), up[:, :4] + nn.functional.interpolate(z, scale_factor=2)[:, :4]


class AttnNet(nn.Module):
    """Patch conv → 16 tokens of width 16 (square, so a swapped perm keeps shapes) → LN → attention → GELU MLP."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, 5)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # (1, 16, 16)
        b, n, c = t.shape
        q, k, v = self.qkv(self.norm1(t)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
        t = t + self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        t = t + self.mlp(self.norm2(t))
        return self.head(t.mean(1))


class Overflow(nn.Module):
    """Activations above 65504 (module ``amp``: fp16-representable weights, sums beyond fp16) before a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.amp = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)
        with torch.no_grad():
            self.amp.weight.fill_(2000.0)
            self.amp.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.stem(x)).flatten(2).transpose(1, 2) + 3.0
        return self.head(self.norm(self.amp(t)).mean(1))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, dim, 1, 1), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Underflow(nn.Module):
    """A layer scale of 1e-6 (timm initialises some at 1e-5): its products fall below fp16's normal range."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.scale = LayerScale(16, 1e-6)
        self.head = nn.Linear(16, 4, bias=False)  # the output is made of the tiny values only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scale(self.stem(x)).mean((2, 3)))


def _build(module: nn.Module, path: Path, **opts: Any) -> Path:
    example = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with converter_output(False):
        formats.get("coreml").convert(module.eval(), (example,), path, ExportOptions(**opts))
    return path


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("mil-models")
    models = {"conv": ConvNet().eval(), "attn": AttnNet().eval(), "overflow": Overflow().eval(),
              "underflow": Underflow().eval()}
    with torch.no_grad():  # give BatchNorm statistics that are not the identity
        bn = models["conv"].stem[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    out: dict[str, Any] = {"models": models}
    for name in ("conv", "attn"):
        for prec in ("fp32", "fp16"):
            out[f"{name}.{prec}"] = _build(models[name], d / f"{name}.{prec}.mlpackage", precision=prec)
    out["conv.int8"] = _build(models["conv"], d / "conv.int8.mlpackage", precision="int8")
    out["attn.image"] = _build(models["attn"], d / "attn.image.mlpackage", precision="fp16", coreml_image_input=True)
    out["overflow.fp16"] = _build(models["overflow"], d / "overflow.fp16.mlpackage", precision="fp16")
    out["underflow.fp16"] = _build(models["underflow"], d / "underflow.fp16.mlpackage", precision="fp16")
    out["dir"] = d
    return out


def _parity(packages: dict[str, Any], model: str, key: str, inputs: list[torch.Tensor] | None = None) -> Any:
    inputs = inputs or [xs[0] for xs in verification_inputs([(1, 3, 16, 16)], 3)]
    reference = reference_outputs(packages["models"][model], [[x] for x in inputs])
    return compare(reference, run_package(packages[key], [x.numpy() for x in inputs]), TOLERANCE["fp16"])


@pytest.mark.parametrize("model", ["conv", "attn"])
def test_parity_with_pytorch(packages, model):
    p32 = _parity(packages, model, f"{model}.fp32")
    p16 = _parity(packages, model, f"{model}.fp16")
    assert p32.rel_l2_err <= TOLERANCE["fp32"], p32.reason
    assert p16.verified and p16.top1_agreement in (1.0, None), p16.reason  # None: several outputs
    assert p16.rel_l2_err > 10 * p32.rel_l2_err  # fp16 rounding really happened
    assert p16.rel_l2_err > 1e-5


def test_outputs_come_in_spec_order(packages):
    x = [xs[0] for xs in verification_inputs([(1, 3, 16, 16)], 1)]
    outs = run_package(packages["conv.fp32"], [x[0].numpy()])[0]
    ref = reference_outputs(packages["models"]["conv"], [x])[0]
    assert [o.shape for o in outs] == [r.shape for r in ref]
    for o, r in zip(outs, ref, strict=True):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)


def test_int8_weights_are_dequantized_by_the_program(packages):
    ops = {op.op_type for op in load_package(packages["conv.int8"]).main.operations}
    assert "constexpr_affine_dequantize" in ops
    p8 = _parity(packages, "conv", "conv.int8")
    p16 = _parity(packages, "conv", "conv.fp16")
    assert p8.rel_l2_err <= TOLERANCE["int8"], p8.reason
    assert p8.rel_l2_err > p16.rel_l2_err  # quantized weights cost precision on top of fp16


def test_image_input_takes_normalised_tensors(packages):
    sets = formats.get("coreml").reference_inputs(ExportOptions("fp16", coreml_image_input=True), [[1, 3, 16, 16]], 2)
    inputs = [xs[0] for xs in sets]
    p = _parity(packages, "attn", "attn.image", inputs)
    assert p.verified, p.reason
    pkg = load_package(packages["attn.image"])
    assert pkg.inputs[0].kind == "image" and pkg.inputs[0].color == "RGB"
    from hybridexport.export.mil.run import image_pixels

    pixels = image_pixels(pkg.main, "input", inputs[0].numpy())
    assert pixels.min() >= 0 and pixels.max() <= 255 and np.all(pixels == np.rint(pixels))


# ------------------------------------------------------------------ faults the interpreter must catch
def _edit(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of ``src`` whose spec went through ``edit(spec)`` (weights copied as they are)."""
    spec = ct.utils.load_spec(str(src))
    edit(spec)
    model = ct.models.MLModel(spec, weights_dir=str(src / "Data" / "com.apple.CoreML" / "weights"),
                              skip_model_load=True)
    model.save(str(dst))
    return dst


def _ops(spec: Any) -> list[Any]:
    fn = spec.mlProgram.functions["main"]
    return list(fn.block_specializations[fn.opset].operations)


def _const(spec: Any, name: str) -> Any:
    return next(op for op in _ops(spec) if op.type == "const" and op.outputs[0].name == name)


def _arg(op: Any, name: str) -> str:
    return op.inputs[name].arguments[0].name


def test_swapped_transpose_perm_fails_parity(packages):
    def swap(spec: Any) -> None:
        for op in _ops(spec):
            if op.type == "transpose":
                vals = _const(spec, _arg(op, "perm")).attributes["val"].immediateValue.tensor.ints.values
                if list(vals) == [0, 2, 1]:  # the (1, 16, 16) token transpose: swapping keeps the shape
                    vals[1], vals[2] = 1, 2
                    return
        raise AssertionError("no token transpose found")

    bad = _edit(packages["attn.fp16"], packages["dir"] / "perm.mlpackage", swap)
    assert _parity(packages, "attn", "attn.fp16").verified
    packages["perm"] = bad
    p = _parity(packages, "attn", "perm")
    assert not p.verified and p.rel_l2_err > 0.1


def test_changed_softmax_axis_fails_parity(packages):
    def axis(spec: Any) -> None:
        op = next(o for o in _ops(spec) if o.type == "softmax")
        _const(spec, _arg(op, "axis")).attributes["val"].immediateValue.tensor.ints.values[0] = -2

    packages["axis"] = _edit(packages["attn.fp16"], packages["dir"] / "axis.mlpackage", axis)
    p = _parity(packages, "attn", "axis")
    assert not p.verified, p.reason


def test_perturbed_conv_weight_fails_parity(packages):
    dst = packages["dir"] / "weight.mlpackage"
    shutil.copytree(packages["conv.fp16"], dst)
    spec = ct.utils.load_spec(str(dst))
    conv = next(o for o in _ops(spec) if o.type == "conv")  # the stem's (BatchNorm folded in)
    blob = _const(spec, _arg(conv, "weight")).attributes["val"].blobFileValue
    weights = dst / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    raw = bytearray(weights.read_bytes())
    sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", raw, blob.offset)  # MIL blob metadata
    assert sentinel == 0xDEADBEEF
    w = np.frombuffer(bytes(raw[offset:offset + size]), dtype=np.float16).copy()
    w[: w.size // 2] *= -1  # half of the stem's filters change sign
    raw[offset:offset + size] = w.tobytes()
    weights.write_bytes(bytes(raw))
    packages["weight"] = dst
    p = _parity(packages, "conv", "weight")
    assert not p.verified and p.rel_l2_err > 0.05


def test_inconsistent_edit_is_a_clear_error(packages, tmp_path):
    def break_shape(spec: Any) -> None:
        op = next(o for o in _ops(spec) if o.type == "reshape")
        ints = _const(spec, _arg(op, "shape")).attributes["val"].immediateValue.tensor.ints.values
        ints[-1] = ints[-1] + 1  # no longer the input's volume

    bad = _edit(packages["attn.fp16"], tmp_path / "bad.mlpackage", break_shape)
    with pytest.raises(PackageError, match="does not load.*re-run `hybridexport convert --force`") as err:
        run_package(bad, [np.zeros((1, 3, 16, 16), np.float32)])
    assert "\n" not in str(err.value)
    with pytest.raises(PackageError, match="not an .mlpackage"):
        load_package(tmp_path)
    with pytest.raises(PackageError, match="does not exist"):
        load_package(tmp_path / "missing.mlpackage")


# ------------------------------------------------------------------ where precision is lost
def test_overflow_is_reported_at_the_module(packages):
    model = packages["models"]["overflow"]
    rep = module_report(packages["overflow.fp16"], model)
    assert rep.origins, "no inf/NaN origin found"
    first = rep.origins[0]
    assert first.origin == "inf" and first.module == "amp" and first.op_type == "linear"
    assert first.ref_max_abs > 65504 and first.inf > 0
    norm = next(o for o in rep.ops if o.op_type == "layer_norm")
    assert norm.module == "norm" and norm.nan > 0 and not norm.origin  # NaN inherited from amp's inf
    assert not rep.ok()
    tip = rep.suggestions()[0]
    assert "'amp'" in tip and "overflows fp16" in tip and "op_selector" in tip and "rescale" in tip
    d = rep.to_dict()
    assert d["origins"][0] == first.name and d["ok"] is False
    out = run_package(packages["overflow.fp16"], [[xs[0] for xs in verification_inputs([(1, 3, 16, 16)], 1)][0].numpy()])[0][0]
    assert np.isnan(out).all()  # what the device would return; parity must count it as a failure
    assert np.isfinite(run_package(packages["attn.fp16"], [np.zeros((1, 3, 16, 16), np.float32)])[0][0]).all()


def test_underflow_is_reported_at_the_module(packages):
    rep = module_report(packages["underflow.fp16"], packages["models"]["underflow"])
    jump = rep.first_jump
    assert jump is not None and jump.module == "scale" and jump.op_type in ("mul", "conv")  # coremltools may fold it
    assert jump.subnormal > 0.5 and jump.inherited_err <= rep.tolerance
    assert not rep.origins and not rep.ok()
    tip = rep.suggestions()[0]
    assert "below fp16's normal range" in tip and "'scale'" in tip and "op_selector" in tip


def test_clean_model_report_and_first_jump(packages):
    model = packages["models"]["attn"]
    rep = module_report(packages["attn.fp16"], model)
    assert not rep.origins and rep.ok()
    assert rep.matched_share > 0.9
    assert rep.output_rel_err <= 1e-2 and rep.reference_pytorch_rel_err <= 1e-5
    mapped = {o.module for o in rep.ops if o.module}
    assert {"patch", "norm1", "qkv", "proj", "head"} <= mapped
    assert rep.suggestions()[0].startswith("no op exceeds")
    strict = module_report(packages["attn.fp16"], model, tolerance=1e-4)
    jump = strict.first_jump
    assert jump is not None and jump.rel_err > 1e-4 and jump.inherited_err <= 1e-4
    before = [o for o in strict.ops if o.index < jump.index and o.rel_err is not None]
    assert all(o.rel_err <= 1e-4 for o in before)
    assert f"'{jump.reference_op}'" in strict.suggestions()[0]


def test_interpreter_records_every_op(packages):
    pkg = load_package(packages["attn.fp16"])
    interp = Interpreter(pkg.program)
    res = interp.run([[xs[0] for xs in verification_inputs([(1, 3, 16, 16)], 1)][0].numpy()], record=True)
    computed = [v.name for s in interp.steps for v in s.op.outputs]
    assert list(res.trace) == computed
    assert all(res.trace[n].dtype in (np.float16, np.float32, np.int32, np.bool_) for n in computed)
    assert any(a.dtype == np.float16 for a in res.trace.values())
