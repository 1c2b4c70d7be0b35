"""Fast unit tests of the export stage's pieces (no conversions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridexport.errors import HybridExportError, UnsupportedOpError
from hybridexport.export import diagnose, formats, verify
from hybridexport.export.cache import cache_key, sha256_path, size_bytes
from hybridexport.export.formats.coreml import FORMAT as COREML
from hybridexport.export.formats.coreml import check_structure, image_params, resolved_target
from hybridexport.export.formats.onnx import node_modules
from hybridexport.export.manifest import Manifest, Parity, artifact_path, find_manifests, shape_tag
from hybridexport.export.options import TOLERANCE, BadOptionError, ExportOptions, resolve_precision
from hybridexport.optable import OpRow, OpTable, TensorSpec


def test_parse_formats_and_precisions():
    assert formats.parse("all") == ["coreml", "tflite", "onnx", "executorch"]
    assert formats.parse("onnx, tflite,onnx") == ["onnx", "tflite"]
    assert formats.parse(["executorch", "coreml"]) == ["executorch", "coreml"]
    with pytest.raises(BadOptionError, match="unknown format 'pte'"):
        formats.parse("pte")
    assert formats.get("coreml").default_precision == "fp16"
    assert resolve_precision("coreml", None) == "fp16"
    assert resolve_precision("onnx", None) == "fp32"
    assert resolve_precision("tflite", "int8") == "int8"
    with pytest.raises(BadOptionError):
        resolve_precision("onnx", "fp8")
    assert TOLERANCE == {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}


def test_every_format_owns_its_facts():
    for name in formats.NAMES:
        f = formats.get(name)
        assert f.name == name and f.title and f.suffix.startswith(".") and f.default_device
        assert formats.for_path(f"model.fp32{f.suffix}") is f
        assert f.default_precision in ("fp32", "fp16")
    assert formats.title("coreml") == "Core ML" and formats.title("pytorch") == "pytorch"
    with pytest.raises(BadOptionError, match="known suffixes"):
        formats.for_path("model.h5")


def test_artifact_identity_includes_input_shapes(tmp_path):
    assert shape_tag([[1, 3, 224, 224]]) == "224"
    assert shape_tag([[1, 3, 256, 192]]) == "1x3x256x192"
    assert shape_tag([[1, 3, 64, 64], [1, 8]]) == "1x3x64x64+1x8"
    a = artifact_path(tmp_path, "timm:resnet18", "onnx", "fp32", [[1, 3, 224, 224]])
    b = artifact_path(tmp_path, "timm:resnet18", "onnx", "fp32", [[1, 3, 256, 192]])
    assert a.name == "timm_resnet18.224.fp32.onnx" and b.name == "timm_resnet18.1x3x256x192.fp32.onnx" and a != b
    assert artifact_path(tmp_path, "../../etc", "onnx", "fp32", [[1, 3, 8, 8]]).parent.parent == tmp_path


def test_coreml_target_rules():
    assert resolved_target(ExportOptions("fp16")) == "iOS15"
    assert resolved_target(ExportOptions("int8")) == "iOS16"
    formats.get("onnx").check(ExportOptions("int8", coreml_target="iOS15"))  # only Core ML cares
    with pytest.raises(BadOptionError, match="iOS16"):
        COREML.check(ExportOptions("int8", coreml_target="iOS15"))
    with pytest.raises(BadOptionError, match="iOS14"):
        COREML.check(ExportOptions("fp16", coreml_target="iOS14"))
    # the cache key sees the Core ML options only for Core ML artifacts
    a, b = ExportOptions("fp16"), ExportOptions("fp16", coreml_image_input=True)
    assert a.key_fields("onnx") == b.key_fields("onnx")
    assert a.key_fields("coreml") != b.key_fields("coreml")
    assert b.given() == {"coreml_image_input"} and a.given() == set()


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
    a = verify.verification_inputs([(1, 3, 8, 8), (1, 5)], 3)
    b = verify.verification_inputs([(1, 3, 8, 8), (1, 5)], 3)
    assert len(a) == 3 and all((x == y).all() for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    assert [tuple(x.shape) for x in a[0]] == [(1, 3, 8, 8), (1, 5)]
    assert not (a[0][0] == a[1][0]).all()


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


def test_onnx_node_modules_read_exporter_metadata():
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
    assert node_modules(m) == {"node_conv": "stages.0.conv", "node_relu": "stages.0.act", "node_root": "<root>",
                               "node_plain": ""}


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


def _table(inputs=((1, 3, 8, 8),), spec=6, n_ops=2) -> OpTable:
    return OpTable(format="coreml", ops=[OpRow(name=f"o{i}", op_type="conv", kind="conv_kxk") for i in range(n_ops)],
                   inputs=[TensorSpec(f"input_{i}", list(s), "tensor") for i, s in enumerate(inputs)],
                   extra={"spec_version": spec})


def test_coreml_structural_check():
    check_structure(_table(), [[1, 3, 8, 8]], "iOS15")
    with pytest.raises(HybridExportError, match="inputs"):
        check_structure(_table(inputs=((1, 3, 8, 9),)), [[1, 3, 8, 8]], "iOS15")
    with pytest.raises(HybridExportError, match="spec version"):
        check_structure(_table(spec=6), [[1, 3, 8, 8]], "iOS17")
    with pytest.raises(HybridExportError, match="no ops"):
        check_structure(_table(n_ops=0), [[1, 3, 8, 8]], "iOS15")
    p = image_params()
    # pixel 0..255 maps to ImageNet-normalised values: mid-grey of channel 0 lands near 0
    assert abs(128 * p["scale"] + p["bias"][0] - (128 / 255 - 0.485) / 0.229) < 0.05


def test_manifest_roundtrip_resolves_beside_itself_and_checks_the_artifact(tmp_path):
    (tmp_path / "x").mkdir()
    art = tmp_path / "x" / "x.8.fp32.onnx"
    art.write_bytes(b"onnx bytes")
    m = Manifest(
        model="x", resolution=8, format="onnx", precision="fp32", path=str(art), size_bytes=art.stat().st_size,
        sha256=sha256_path(art), versions={"torch": "2"}, passes=[], parity=Parity(verified=True, rel_l2_err=1e-7),
        ops={"Conv": 1}, rank5_tensors=0, seconds=1.0, input_shapes=[[1, 3, 8, 8]], extra={"cache_key": "k"},
    )
    (tmp_path / "x" / "x.8.fp32.onnx.json").write_text(json.dumps(m.to_dict()))
    assert json.loads((tmp_path / "x" / "x.8.fp32.onnx.json").read_text())["path"] == "x.8.fp32.onnx"
    [back] = find_manifests(tmp_path)
    assert back == m and back.check_artifact() == art
    moved = tmp_path / "copy"  # a copied output folder describes its own files
    import shutil

    shutil.copytree(tmp_path / "x", moved / "x")
    [again] = find_manifests(moved)
    assert again.path == str(moved / "x" / "x.8.fp32.onnx")
    (moved / "x" / "x.8.fp32.onnx").write_bytes(b"onnx byt")
    with pytest.raises(HybridExportError, match="truncated or replaced.*convert x --to onnx --force"):
        again.check_artifact()
    (moved / "x" / "x.8.fp32.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(HybridExportError, match="does not match the sha256"):
        again.check_artifact()


def test_coreml_image_inputs_roundtrip_to_pixels():
    """With --coreml-image-input, verification feeds pixel images; the tensor PyTorch sees maps back exactly."""
    import torch

    from hybridexport.export.formats.coreml import _to_image

    opts = ExportOptions("fp16", coreml_image_input=True)
    [[x]] = COREML.reference_inputs(opts, [[1, 3, 4, 5]], 1)
    img = _to_image(x.numpy())
    assert img.size == (5, 4) and img.mode == "RGB"
    p = image_params()
    back = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None]) * p["scale"]
    back += torch.tensor(p["bias"]).view(1, 3, 1, 1)
    assert torch.allclose(back, x, atol=1e-5)
    assert COREML.reference_inputs(ExportOptions("fp16"), [[1, 3, 4, 5]], 1) is None
