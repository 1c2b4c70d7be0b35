"""Export behaviour on tiny models: cache reuse and --force, atomic writes, errors, quantization, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from test_export_support import LearnedTokens, NetWithLgamma, loaded, tiny

from hybridexport.errors import ConversionError, UnsupportedOpError
from hybridexport.export import convert, manifest_path
from hybridexport.export import onnx as onnx_fmt
from hybridexport.export.cache import sha256_path
from hybridexport.export.manifest import Manifest, artifact_path

torch.set_num_threads(1)


def _leftovers(folder: Path) -> list[str]:
    """Anything in ``folder`` besides finished artifacts and their manifests (temp dirs, partial files)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_cache_reuse_force_and_weight_change(tmp_path):
    [first] = convert(tiny(), to="onnx", out=tmp_path, rewrite=False)
    art = Path(first.path)
    assert art.exists() and not first.extra["reused"]
    assert first.sha256 == sha256_path(art) and first.size_bytes == art.stat().st_size
    on_disk = Manifest.load(manifest_path(art))
    assert on_disk.extra["cache_key"] == first.extra["cache_key"] and on_disk.extra["reused"] is False
    mtime = art.stat().st_mtime_ns

    [again] = convert(tiny(), to="onnx", out=tmp_path, rewrite=False)
    assert again.extra["reused"] is True and again.sha256 == first.sha256
    assert art.stat().st_mtime_ns == mtime  # not rewritten

    [forced] = convert(tiny(), to="onnx", out=tmp_path, rewrite=False, force=True)
    assert forced.extra["reused"] is False and art.stat().st_mtime_ns != mtime

    [other_weights] = convert(tiny(seed=1), to="onnx", out=tmp_path, rewrite=False)
    assert other_weights.extra["reused"] is False
    assert other_weights.extra["cache_key"] != first.extra["cache_key"]

    # a tampered artifact is not reused
    art.write_bytes(art.read_bytes() + b"\0")
    [rebuilt] = convert(tiny(seed=1), to="onnx", out=tmp_path, rewrite=False)
    assert rebuilt.extra["reused"] is False and rebuilt.sha256 == sha256_path(art)
    assert _leftovers(art.parent) == []


@pytest.mark.parametrize("interrupt", [RuntimeError("converter crashed"), KeyboardInterrupt()])
def test_failure_mid_convert_leaves_no_artifact(tmp_path, monkeypatch, interrupt):
    real_build = onnx_fmt.build

    def half_written(module, example, path, opts):
        real_build(module, example, path, opts)  # a complete file at the temporary path...
        path.write_bytes(path.read_bytes()[:100])  # ...then truncated, as if killed mid-write
        raise interrupt

    monkeypatch.setattr(onnx_fmt, "build", half_written)
    with pytest.raises((ConversionError, KeyboardInterrupt)):
        convert(tiny(), to="onnx", out=tmp_path, rewrite=False)
    art = artifact_path(tmp_path, "tiny-net", "onnx", "fp32")
    assert not art.exists() and not manifest_path(art).exists()
    assert _leftovers(art.parent) == []


def test_failed_directory_artifact_leaves_nothing(tmp_path, monkeypatch):
    from hybridexport.export import coreml as coreml_fmt

    def partial_package(module, example, path, opts):
        (path / "Data").mkdir(parents=True)
        (path / "Data" / "weight.bin").write_bytes(b"\0" * 64)
        raise RuntimeError("disk full")

    monkeypatch.setattr(coreml_fmt, "build", partial_package)
    with pytest.raises(ConversionError, match="disk full"):
        convert(tiny(), to="coreml", out=tmp_path, rewrite=False)
    art = artifact_path(tmp_path, "tiny-net", "coreml", "fp16")
    assert not art.exists() and _leftovers(art.parent) == []


def test_parity_failure_writes_nothing_unless_allowed(tmp_path, monkeypatch):
    """A real fp16 ONNX artifact checked against an impossible tolerance: rejected, or kept when allowed."""
    from hybridexport.export import options

    monkeypatch.setitem(options.TOLERANCE, "fp16", 1e-9)
    with pytest.raises(ConversionError, match="does not match PyTorch.*--allow-mismatch"):
        convert(tiny(), to="onnx", precision="fp16", out=tmp_path, rewrite=False)
    art = artifact_path(tmp_path, "tiny-net", "onnx", "fp16")
    assert not art.exists()
    [kept] = convert(tiny(), to="onnx", precision="fp16", out=tmp_path, rewrite=False, allow_mismatch=True)
    assert art.exists() and kept.extra["parity_ok"] is False and not kept.parity.verified
    assert 0 < kept.parity.rel_l2_err < 1e-2 and "allow-mismatch" in kept.parity.reason
    # without --allow-mismatch the mismatching artifact is not reused: the rebuild fails again
    with pytest.raises(ConversionError):
        convert(tiny(), to="onnx", precision="fp16", out=tmp_path, rewrite=False)


@pytest.mark.parametrize("fmt", ["onnx", "coreml", "tflite", "executorch"])
def test_unsupported_op_names_op_and_module(tmp_path, fmt):
    model = loaded(NetWithLgamma(), name="lgamma-net", resolution=8)
    with pytest.raises(UnsupportedOpError) as info:
        convert(model, to=fmt, out=tmp_path, rewrite=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "'lgamma'" in msg and "module 'odd' (LgammaBlock)" in msg, msg
    assert isinstance(info.value.__cause__, Exception)  # the converter's trace stays chained for --verbose
    assert not any(tmp_path.rglob("*.json"))


def test_rewrite_passes_are_applied_and_recorded(tmp_path):
    [m] = convert(tiny(), to="onnx", out=tmp_path)  # default pipeline
    assert "fuse-bn" in m.passes
    assert any(p["name"] == "fuse-bn" and p["applied"] for p in m.extra["rewrite"]["passes"])
    assert "BatchNormalization" not in m.ops and m.parity.verified  # folded, and still matches PyTorch
    [chosen] = convert(tiny(), to="onnx", out=tmp_path / "b", passes=["split-heads"])
    assert chosen.passes == [] and chosen.extra["rewrite"]["passes"][0]["name"] == "split-heads"
    [plain] = convert(tiny(), to="onnx", out=tmp_path / "c", rewrite=False)
    assert plain.passes == [] and plain.extra["rewrite"] is None


QUANT_OPS = {
    "onnx": ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"),
    "tflite": (),  # dynamic range keeps op names; checked through the int8 weight tensors below
    "executorch": ("XnnpackBackend:quantized_decomposed.quantize_per_tensor.default",),
    "coreml": ("constexpr_affine_dequantize",),
}


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "executorch", "coreml"])
def test_int8_post_training_quantization(tmp_path, fmt):
    [m] = convert(tiny(), to=fmt, precision="int8", out=tmp_path, rewrite=False)
    assert m.precision == "int8" and "quantization" in m.extra
    for op in QUANT_OPS[fmt]:
        assert op in m.ops, (op, m.ops)
    if fmt == "coreml":
        assert m.extra["coreml_target"] == "iOS16" and "checked structurally" in m.parity.reason
        return
    assert m.parity.verified and m.parity.n_inputs == 4
    assert 0 < m.parity.rel_l2_err <= 0.1  # quantized: some error, within the int8 tolerance
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=m.path)
        assert any(str(t["dtype"]).endswith("int8'>") for t in it.get_tensor_details())


def test_int8_tflite_with_a_constant_left_of_a_matmul(tmp_path):
    """LiteRT's hybrid batch matmul takes an int8 constant only on the right: the quantizer must leave a
    constant left operand (Mobile-Former's tokens) in float, or the model fails to load."""
    [m] = convert(loaded(LearnedTokens()), to="tflite", precision="int8", out=tmp_path, rewrite=False)
    assert m.parity.verified and m.parity.rel_l2_err <= 0.1


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "executorch"])
def test_fp16(tmp_path, fmt):
    [m] = convert(tiny(), to=fmt, precision="fp16", out=tmp_path, rewrite=False)
    assert m.parity.verified and m.parity.tolerance == 1e-2
    assert 0 < m.parity.rel_l2_err <= 1e-2 and m.parity.top1_agreement == 1.0


def test_cli_convert_end_to_end(tmp_path, capsys):
    from hybridexport.cli import main

    args = ["convert", "timm:test_vit", "--to", "onnx", "--out", str(tmp_path), "--no-rewrite"]
    assert main(args) == 0
    out = capsys.readouterr().out
    art = artifact_path(tmp_path, "timm:test_vit", "onnx", "fp32")
    assert art.exists() and art.name in out.replace("\n", "") and "built in" in out
    assert "hybridexport convert" in out  # the summary table

    assert main([*args, "--json"]) == 0
    [d] = json.loads(capsys.readouterr().out)
    assert d["extra"]["reused"] is True and d["path"] == str(art.absolute())
    assert d["parity"]["verified"] and d["parity"]["rel_l2_err"] < 1e-4 and d["ops"]

    assert main(["convert", "timm:test_vit", "--to", "pte", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'pte'" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == ["timm_test_vit"]


def test_tflite_layout_failure_gets_workaround(tmp_path, monkeypatch):
    from test_export_support import MobileVitV2Net

    from hybridexport.export import tflite as tflite_fmt

    model = loaded(MobileVitV2Net(), name="mvitv2-block", resolution=8)
    [m] = convert(model, to="tflite", out=tmp_path, rewrite=False)
    [w] = m.extra["workarounds"]
    assert w["name"] == "LITERT_TORCH_FULL_TFL_DECOMPS=1" and "broadcast-compatible" in w["why"]
    assert m.parity.verified and m.parity.rel_l2_err <= 1e-4 and "BROADCAST_TO" in m.ops
    assert "LITERT_TORCH_FULL_TFL_DECOMPS" not in os.environ  # restored after the conversion

    # with no workaround left, the failure is one line with the converter's reason, not a stack trace
    monkeypatch.setattr(tflite_fmt, "WORKAROUNDS", ())
    with pytest.raises(ConversionError) as info:
        convert(model, to="tflite", out=tmp_path / "none", rewrite=False)
    msg = str(info.value)
    assert "\n" not in msg and "broadcast-compatible" in msg and "--verbose" in msg


def test_coreml_options_fp32_target_and_image_input(tmp_path):
    [m] = convert(tiny(), to="coreml", precision="fp32", coreml_target="iOS17", coreml_image_input=True,
                  out=tmp_path, rewrite=False)
    s = m.extra["structure"]
    assert m.extra["compute_precision"] == "FLOAT32" and m.extra["coreml_target"] == "iOS17"
    assert s["spec_version"] == 8 and s["inputs"][0]["type"] == "image" and s["inputs"][0]["shape"] == [1, 3, 16, 16]
    assert "FLOAT16" not in s["const_dtypes"] and s["const_dtypes"]["FLOAT32"] > 0
    assert m.extra["image_input"]["color_layout"] == "RGB"
    assert Path(m.path).name == "tiny-net.fp32.mlpackage" and (Path(m.path) / "Manifest.json").exists()
