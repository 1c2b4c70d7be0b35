"""Retry hints never name an option that was already in effect or that cannot change the outcome."""

from __future__ import annotations

import pytest
import torch

from hybridexport.errors import ConversionError
from hybridexport.export import convert, formats
from hybridexport.export.hints import attempt_flags, honest_hints
from hybridexport.export.options import ExportOptions

from models import tiny

torch.set_num_threads(1)


def _hints(fmt: str, precision: str, *, rewritten: bool, passes_given: bool = False, **opts: object) -> list[str]:
    f = formats.get(fmt)
    o = ExportOptions(precision=precision, **opts)
    return honest_hints(f.failure_hints(o), attempt_flags(f, o, rewritten=rewritten), passes_given=passes_given)


def test_given_options_are_not_suggested() -> None:
    assert _hints("coreml", "fp16", rewritten=True) == [
        "--no-rewrite", "--precision fp32", "--coreml-target iOS17", "export --to onnx"]
    assert "--precision fp32" not in _hints("coreml", "fp32", rewritten=True)
    assert "--no-rewrite" not in _hints("tflite", "fp32", rewritten=False)  # nothing was rewritten
    assert _hints("onnx", "fp32", rewritten=False) == []
    assert not any("--coreml-target" in h for h in _hints("coreml", "fp16", rewritten=False, coreml_target="iOS17"))
    assert _hints("tflite", "int8", rewritten=True, passes_given=True) == [
        "--no-rewrite instead of --passes", "export --to onnx"]


def test_flag_values_and_bare_flags() -> None:
    flags = {"--to": "onnx", "--precision": "fp16", "--keep-mismatch": True}
    hints = ["--keep-mismatch to keep it", "--precision fp16", "--precision fp32", "export --to onnx",
             "export --to tflite", "--precision fp32"]
    assert honest_hints(hints, flags) == ["--precision fp32", "export --to tflite"]


def test_parity_hint_with_passes_given(tmp_path, monkeypatch) -> None:
    from hybridexport.export import options

    monkeypatch.setitem(options.TOLERANCE, "fp32", 1e-12)
    with pytest.raises(ConversionError, match="does not match PyTorch") as info:
        convert(tiny(), to="onnx", out=tmp_path, passes=["fuse-bn"], verify_inputs=1)
    msg = str(info.value)
    assert "--no-rewrite instead of --passes" in msg and "--precision fp32" not in msg, msg
