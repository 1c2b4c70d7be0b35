"""Fast unit tests of the export stage's pieces (no conversions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridexport.errors import HybridExportError, UnsupportedOpError
from hybridexport.export import diagnose, verify
from hybridexport.export.cache import cache_key, sha256_path, size_bytes
from hybridexport.export.coreml import check_structure, image_params, structure_summary
from hybridexport.export.manifest import Manifest, Parity, find_manifests
from hybridexport.export.onnx import onnx_node_modules
from hybridexport.export.options import (
    DEFAULT_PRECISION,
    TOLERANCE,
    BadOptionError,
    ExportOptions,
    parse_formats,
    resolve_precision,
)


def test_parse_formats_and_precisions():
    assert parse_formats("all") == ["coreml", "tflite", "onnx", "executorch"]
    assert parse_formats("onnx, tflite,onnx") == ["onnx", "tflite"]
    assert parse_formats(["executorch", "coreml"]) == ["executorch", "coreml"]
    with pytest.raises(BadOptionError, match="unknown format 'pte'"):
        parse_formats("pte")
    assert DEFAULT_PRECISION["coreml"] == "fp16"
    assert resolve_precision("coreml", None) == "fp16"
    assert resolve_precision("onnx", None) == "fp32"
    assert resolve_precision("tflite", "int8") == "int8"
    with pytest.raises(BadOptionError):
        resolve_precision("onnx", "fp8")
    assert TOLERANCE == {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}


def test_coreml_target_rules():
    assert ExportOptions("fp16").resolved_coreml_target == "iOS15"
    assert ExportOptions("int8").resolved_coreml_target == "iOS16"
    ExportOptions("int8", coreml_target="iOS15").check_for("onnx")  # only Core ML cares
    with pytest.raises(BadOptionError, match="iOS16"):
        ExportOptions("int8", coreml_target="iOS15").check_for("coreml")
    with pytest.raises(BadOptionError, match="iOS14"):
        ExportOptions("fp16", coreml_target="iOS14")
    # the cache key sees the Core ML options only for Core ML artifacts
    a, b = ExportOptions("fp16"), ExportOptions("fp16", coreml_image_input=True)
    assert a.key_fields("onnx") == b.key_fields("onnx")
    assert a.key_fields("coreml") != b.key_fields("coreml")


def test_compare_metrics():
    ref = [[np.array([[1.0, 2.0, 3.0]], dtype=np.float32)], [np.array([[3.0, 2.0, 1.0]], dtype=np.float32)]]
    got = [[np.array([[1.0, 2.0, 3.1]])], [np.array([[3.0, 2.0, 1.0]])]]
    p = verify.compare(ref, got, tolerance=0.05)
    assert p.verified and p.n_inputs == 2 and p.top1_agreement == 1.0
    assert p.max_abs_err == pytest.approx(0.1, rel=1e-5)
    assert p.rel_l2_err == pytest.approx(0.1 / np.sqrt(14), rel=1e-5)
    strict = verify.compare(ref, got, tolerance=1e-3)
    assert not strict.verified and "exceeds tolerance" in strict.reason
    flipped = verify.compare(ref, [[np.array([[3.0, 2.0, 1.0]])], [np.array([[3.0, 2.0, 1.0]])]], tolerance=10)
    assert flipped.top1_agreement == 0.5


def test_verification_inputs_are_fixed():
    a = verify.verification_inputs((1, 3, 8, 8), 3)
    b = verify.verification_inputs((1, 3, 8, 8), 3)
    assert len(a) == 3 and all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == a[1]).all()


def test_sha256_of_directory_is_order_independent_and_content_sensitive(tmp_path):
    d = tmp_path / "m.mlpackage"
    (d / "Data").mkdir(parents=True)
    (d / "Data" / "w.bin").write_bytes(b"weights")
    (d / "Manifest.json").write_text("{}")
    h1 = sha256_path(d)
    assert size_bytes(d) == len(b"weights") + 2
    copy = tmp_path / "other.mlpackage"
    (copy / "Data").mkdir(parents=True)
    (copy / "Manifest.json").write_text("{}")  # created in the other order
    (copy / "Data" / "w.bin").write_bytes(b"weights")
    assert sha256_path(copy) == h1
    (copy / "Data" / "w.bin").write_bytes(b"weightz")
    assert sha256_path(copy) != h1
    f = tmp_path / "a.onnx"
    f.write_bytes(b"abc")
    assert sha256_path(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})


def test_onnx_node_modules_reads_exporter_metadata():
    import onnx
    from onnx import helper

    n1 = helper.make_node("Conv", ["x", "w"], ["y"], name="node_conv")
    n1.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'stages', 'stages.0.conv', 'conv2d']")
    n2 = helper.make_node("Relu", ["y"], ["z"], name="node_relu")
    n2.metadata_props.add(
        key="namespace",
        value=": timm.Net/stages: torch.nn.Sequential/stages.0.act: torch.nn.ReLU/relu: aten.relu.default",
    )
    n3 = helper.make_node("Identity", ["z"], ["o"], name="node_root")
    n3.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'add']")
    n4 = helper.make_node("Identity", ["o"], ["p"], name="node_plain")
    g = helper.make_graph([n1, n2, n3, n4], "g", [], [])
    m = helper.make_model(g)
    assert isinstance(m, onnx.ModelProto)
    assert onnx_node_modules(m) == {
        "node_conv": "stages.0.conv",
        "node_relu": "stages.0.act",
        "node_root": "",
        "node_plain": None,
    }


# Messages recorded from the real converters (torch 2.13, coremltools 9.0, litert-torch 0.10.0,
# executorch 1.5.1) when asked to convert torch.lgamma / torch.special.i0.
RECORDED_UNSUPPORTED = [
    ("No ONNX function found for <OpOverload(op='prims.lgamma', overload='default')>. Failure message: "
     "No decompositions registered for the real-valued input", "prims.lgamma"),
    ("PyTorch convert function for op 'special_i0' not implemented.", "special_i0"),
    ("Lowering not found: aten.lgamma.default\n\nWhile executing %lgamma : [num_users=1] = "
     "call_function[target=torch.ops.aten.lgamma.default]", "aten.lgamma.default"),
    ('Operator torch._ops.aten.lgamma.default is not in Core ATen opset (https://pytorch.org/docs/stable/'
     'torch.compiler_ir.html#core-aten-ir)."', "aten.lgamma.default"),
    ("For non-const input, the lowering for Torch `linalg_inv` op is not supported", "linalg_inv"),
]


@pytest.mark.parametrize(("message", "op"), RECORDED_UNSUPPORTED)
def test_unsupported_op_is_recognised_in_converter_messages(message, op):
    try:
        try:
            raise RuntimeError(message)
        except RuntimeError as inner:
            raise ValueError("Failed to convert the exported program to an ONNX model.") from inner
    except ValueError as outer:
        assert diagnose.unsupported_op_name(outer) == op
    assert diagnose.op_base_name(op).removeprefix("special_") in ("lgamma", "i0", "linalg_inv")


def test_converter_failure_messages_are_one_line():
    err = diagnose.converter_failure("tflite", "m", RuntimeError("Lowering not found: aten.lgamma.default"), None, None)
    assert isinstance(err, UnsupportedOpError) and "lgamma" in str(err) and "\n" not in str(err)
    other = diagnose.converter_failure("onnx", "m", RuntimeError("boom\nsecond line\nthird"), None, None)
    assert isinstance(other, HybridExportError) and "\n" not in str(other)
    assert "boom" in str(other) and "--verbose" in str(other)


def _structure(inp=(1, 3, 8, 8), out=(1, 10), spec=6, ops=None):
    return {
        "spec_version": spec,
        "inputs": [{"name": "input", "type": "tensor", "shape": list(inp)}],
        "outputs": [{"name": "y", "type": "tensor", "shape": list(out)}],
        "ops": {"conv": 2} if ops is None else ops,
        "op_count": 2,
        "const_dtypes": {"FLOAT16": 3},
        "rank5_tensors": 0,
    }


def test_coreml_structural_check():
    check_structure(_structure(), [1, 3, 8, 8], [[1, 10]], "iOS15")
    with pytest.raises(HybridExportError, match="outputs"):
        check_structure(_structure(out=(1, 11)), [1, 3, 8, 8], [[1, 10]], "iOS15")
    with pytest.raises(HybridExportError, match="spec version"):
        check_structure(_structure(spec=6), [1, 3, 8, 8], [[1, 10]], "iOS17")
    with pytest.raises(HybridExportError, match="no ops"):
        check_structure(_structure(ops={}), [1, 3, 8, 8], [[1, 10]], "iOS15")
    line = structure_summary(_structure())
    assert "spec v6" in line and "(1, 3, 8, 8)" in line and "float16 x3" in line
    p = image_params()
    # pixel 0..255 maps to ImageNet-normalised values: mid-grey of channel 0 lands near 0
    assert abs(128 * p["scale"] + p["bias"][0] - (128 / 255 - 0.485) / 0.229) < 0.05


def test_manifest_roundtrip_and_find(tmp_path):
    m = Manifest(
        model="x", resolution=8, format="onnx", precision="fp32", path=str(tmp_path / "x.onnx"), size_bytes=1,
        sha256="0" * 64, versions={"torch": "2"}, passes=[], parity=Parity(verified=True, rel_l2_err=1e-7),
        ops={"Conv": 1}, rank5_tensors=0, seconds=1.0, extra={"cache_key": "k"},
    )
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "x.fp32.onnx.json").write_text(json.dumps(m.to_dict()))
    [back] = find_manifests(tmp_path)
    assert back == m


def test_coreml_image_inputs_roundtrip_to_pixels():
    """With --coreml-image-input, verification feeds pixel images; the tensor PyTorch sees maps back exactly."""
    import torch

    from hybridexport.export.coreml import _to_image, reference_inputs

    opts = ExportOptions("fp16", coreml_image_input=True)
    [x] = reference_inputs(opts, [1, 3, 4, 5], 1)
    img = _to_image(x.numpy())
    assert img.size == (5, 4) and img.mode == "RGB"
    p = image_params()
    back = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None]) * p["scale"]
    back += torch.tensor(p["bias"]).view(1, 3, 1, 1)
    assert torch.allclose(back, x, atol=1e-5)
    assert reference_inputs(ExportOptions("fp16"), [1, 3, 4, 5], 1) is None
