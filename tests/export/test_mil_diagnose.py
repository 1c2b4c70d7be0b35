"""``hybridexport diagnose`` (hybridexport.export.mil.command): arguments, and bad input refused before any work."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402

from hybridexport.errors import HybridExportError, InputFileError  # noqa: E402
from hybridexport.export.mil import NotInterpreted, PackageError, command  # noqa: E402
from hybridexport.export.options import BadOptionError  # noqa: E402


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hybridexport diagnose")
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def _save(prog, path):  # noqa: ANN001, ANN202
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15,
                       compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    model.save(str(path))
    return path


def test_help_and_arguments():
    assert "precision" in command.HELP and "fp16" in command.HELP
    a = _args("model.mlpackage", "--seed", "3", "--tolerance", "1e-3", "--top", "5", "--json")
    assert (a.artifact, a.seed, a.tolerance, a.top, a.json, a.all) == ("model.mlpackage", 3, 1e-3, 5, True, False)


def test_bad_options_and_paths_are_one_line_errors(tmp_path):
    with pytest.raises(BadOptionError, match="--tolerance must be > 0"):
        command.run(_args("x.mlpackage", "--tolerance", "0"))
    with pytest.raises(BadOptionError, match="--top must be >= 0"):
        command.run(_args("x.mlpackage", "--top", "-1"))
    with pytest.raises(PackageError, match="does not exist"):
        command.run(_args(str(tmp_path / "missing.mlpackage")))

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))])
    def prog(x):
        return mb.relu(x=x)

    pkg = _save(prog, tmp_path / "plain.mlpackage")
    with pytest.raises(InputFileError, match="no manifest 'plain.mlpackage.json'") as err:
        command.run(_args(str(pkg)))
    assert isinstance(err.value, HybridExportError) and "\n" not in str(err.value)
    (tmp_path / "plain.mlpackage.json").write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(InputFileError, match="manifest version None is not"):
        command.run(_args(str(pkg)))


def test_uninterpreted_op_is_refused_before_rebuilding(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 4)), mb.TensorSpec(shape=(1, 4, 3))])
    def prog(boxes, scores):
        return mb.non_maximum_suppression(boxes=boxes, scores=scores, iou_threshold=0.5, score_threshold=0.1,
                                          max_boxes=2)[0]

    pkg = _save(prog, tmp_path / "nms.mlpackage")
    with pytest.raises(NotInterpreted, match="`non_maximum_suppression` is not interpreted"):
        command.run(_args(str(pkg)))  # no manifest needed to know it cannot be interpreted
    from hybridexport.export.mil import run_package

    with pytest.raises(NotInterpreted):
        run_package(pkg, [[np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 3), np.float32)]])
