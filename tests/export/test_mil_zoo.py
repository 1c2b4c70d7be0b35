"""Zoo models through the interpreter: parity of the fp16 packages ``convert`` makes, and ``diagnose`` on one."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("coremltools")

from hybridexport.export import convert  # noqa: E402
from hybridexport.export.mil import run_package  # noqa: E402
from hybridexport.export.options import TOLERANCE  # noqa: E402
from hybridexport.export.verify import compare, reference_outputs, verification_inputs  # noqa: E402
from hybridexport.zoo import build_model  # noqa: E402

pytestmark = pytest.mark.slow

MODELS = ["mobilevit-xxs", "mobileformer-26m"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("mil-zoo")
    return {m: convert(m, to="coreml", out=out, verify_inputs=0)[0].path for m in MODELS}


@pytest.mark.parametrize("model", MODELS)
def test_fp16_package_matches_pytorch(artifacts, model):
    loaded = build_model(model)
    inputs = [xs[0] for xs in verification_inputs(loaded.input_shapes, 2)]
    parity = compare(reference_outputs(loaded.module, [[x] for x in inputs]), run_package(artifacts[model], [x.numpy() for x in inputs]),
                     TOLERANCE["fp16"])
    assert parity.verified and parity.top1_agreement == 1.0, parity.reason
    assert parity.rel_l2_err > 1e-5  # fp16 rounding happened


def test_diagnose_json(artifacts, capsys):
    from hybridexport.export.mil import command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    code = command.run(parser.parse_args([artifacts["mobilevit-xxs"], "--json"]))
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and not report["origins"]
    assert report["model"] == "mobilevit-xxs" and report["passes"]
    assert report["matched_share"] > 0.95
    ops = report["ops"]
    assert sum(1 for o in ops if o["module"]) / len(ops) > 0.8
    assert report["output_rel_err"] <= TOLERANCE["fp16"] and report["reference_pytorch_rel_err"] <= TOLERANCE["fp32"]
    assert all(o["rel_err"] is None or o["rel_err"] < 0.05 for o in ops)
