"""Export behaviour on tiny models: cache reuse and --force, atomic writes, errors, quantization, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hybridexport.errors import ConversionError, HybridExportError, UnsupportedOpError
from hybridexport.export import convert, formats, manifest_path
from hybridexport.export.cache import sha256_path
from hybridexport.export.manifest import Manifest, artifact_path
from hybridexport.optable import OpTable, op_table_path

from models import LearnedTokens, NetWithLgamma, loaded, tiny

SHAPE = [[1, 3, 16, 16]]

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
    table = OpTable.load(op_table_path(art))  # the op table beside it describes exactly this file
    assert table.artifact_sha256 == first.sha256 and first.op_table == op_table_path(art).name
    assert first.ops == table.histogram() and first.input_shapes == SHAPE
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
    fmt = formats.get("onnx")
    real_convert = type(fmt).convert

    def half_written(self, module, examples, path, opts):
        real_convert(self, module, examples, path, opts)  # a complete file at the temporary path...
        path.write_bytes(path.read_bytes()[:100])  # ...then truncated, as if killed mid-write
        raise interrupt

    monkeypatch.setattr(type(fmt), "convert", half_written)
    with pytest.raises((ConversionError, KeyboardInterrupt)):
        convert(tiny(), to="onnx", out=tmp_path, rewrite=False)
    art = artifact_path(tmp_path, "tiny-net", "onnx", "fp32", SHAPE)
    assert not art.exists() and not manifest_path(art).exists() and not op_table_path(art).exists()
    assert _leftovers(art.parent) == []


def test_failed_directory_artifact_leaves_nothing(tmp_path, monkeypatch):
    fmt = formats.get("coreml")

    def partial_package(self, module, examples, path, opts):
        (path / "Data").mkdir(parents=True)
        (path / "Data" / "weight.bin").write_bytes(b"\0" * 64)
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(fmt), "convert", partial_package)
    with pytest.raises(ConversionError, match="disk full"):
        convert(tiny(), to="coreml", out=tmp_path, rewrite=False)
    art = artifact_path(tmp_path, "tiny-net", "coreml", "fp16", SHAPE)
    assert not art.exists() and _leftovers(art.parent) == []


def test_a_killed_conversion_is_cleaned_up_by_the_next(tmp_path):
    """A process killed mid-write leaves its hidden temporary folder; the next write to that target removes it."""
    import subprocess
    import sys

    art = artifact_path(tmp_path, "tiny-net", "onnx", "fp32", SHAPE)
    art.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = art.parent / f".{art.name}.{int(dead.stdout)}.abcd.tmp"
    (stale / art.name).mkdir(parents=True)
    (stale / art.name / "partial").write_bytes(b"\0" * 1024)
    convert(tiny(), to="onnx", out=tmp_path, rewrite=False)
    assert not stale.exists() and _leftovers(art.parent) == []


def test_parity_failure_writes_nothing_unless_allowed(tmp_path, monkeypatch):
    """A real fp16 ONNX artifact checked against an impossible tolerance: rejected, or kept when allowed."""
    from hybridexport.export import options

    monkeypatch.setitem(options.TOLERANCE, "fp16", 1e-9)
    with pytest.raises(ConversionError, match="does not match PyTorch") as info:
        convert(tiny(), to="onnx", precision="fp16", out=tmp_path, rewrite=False)
    # the hint names only what was not given and can help: not --no-rewrite (it was), but fp32
    assert "--keep-mismatch" in str(info.value) and "--precision fp32" in str(info.value)
    assert "--no-rewrite" not in str(info.value)
    art = artifact_path(tmp_path, "tiny-net", "onnx", "fp16", SHAPE)
    assert not art.exists()
    [kept] = convert(tiny(), to="onnx", precision="fp16", out=tmp_path, rewrite=False, keep_mismatch=True)
    assert art.exists() and kept.extra["parity_ok"] is False and not kept.parity.verified
    assert 0 < kept.parity.rel_l2_err < 1e-2 and "keep-mismatch" in kept.parity.reason
    # without --keep-mismatch the mismatching artifact is not reused: the rebuild fails again
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
    "coreml": (),  # int8 weights are constants (constexpr_affine_dequantize), checked in the op table below
}


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "executorch", "coreml"])
def test_int8_post_training_quantization(tmp_path, fmt):
    [m] = convert(tiny(), to=fmt, precision="int8", out=tmp_path, rewrite=False)
    assert m.precision == "int8" and "quantization" in m.extra
    for op in QUANT_OPS[fmt]:
        assert op in m.ops, (op, m.ops)
    if fmt == "coreml":
        assert m.extra["coreml_target"] == "iOS16"
        assert m.parity.method.startswith("MIL reference interpreter")  # int8 weights, fp16 program, run here
        assert OpTable.load(m.op_table_path()).extra["constants"].get("constexpr_affine_dequantize", 0) > 0
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
    art = artifact_path(tmp_path, "timm:test_vit", "onnx", "fp32", [[1, 3, 160, 160]])
    assert art.exists() and art.name in out.replace("\n", "") and "built in" in out
    assert "hybridexport convert" in out  # the summary table

    assert main([*args, "--json"]) == 0
    [d] = json.loads(capsys.readouterr().out)
    assert d["extra"]["reused"] is True and d["path"] == art.name
    assert d["parity"]["verified"] and d["parity"]["rel_l2_err"] < 1e-4 and d["ops"]

    assert main(["convert", "timm:test_vit", "--to", "pte", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'pte'" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == ["timm_test_vit"]


def test_tflite_layout_failure_gets_workaround(tmp_path, monkeypatch):
    from hybridexport.export.formats import tflite as tflite_fmt

    from models import MobileVitV2Net

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
    table = OpTable.load(m.op_table_path())
    assert m.extra["compute_precision"] == "FLOAT32" and m.extra["coreml_target"] == "iOS17"
    assert table.extra["spec_version"] == 8
    assert table.inputs[0].dtype == "image" and table.inputs[0].shape == [1, 3, 16, 16]
    assert {d for o in table.ops for d in o.dtypes} <= {"fp32", "int32", "bool"}
    assert m.extra["image_input"]["color_layout"] == "RGB"
    assert Path(m.path).name == "tiny-net.16.fp32.mlpackage" and (Path(m.path) / "Manifest.json").exists()


def test_options_that_cannot_apply_and_contradictions_fail_before_work(tmp_path):
    with pytest.raises(HybridExportError, match="--coreml-image-input only applies to Core ML"):
        convert(tiny(), to="onnx", coreml_image_input=True, out=tmp_path)
    with pytest.raises(HybridExportError, match="--no-rewrite"):
        convert(tiny(), to="onnx", rewrite=False, passes=["fuse-bn"], out=tmp_path)
    with pytest.raises(HybridExportError, match="resolution 0"):
        convert("iformer-t", to="onnx", resolution=0, out=tmp_path)
    assert not any(tmp_path.iterdir())
