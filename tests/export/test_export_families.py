"""The smallest variant of each family converted to all four formats (each model converts once per format).

Checks the real outputs: parity within tolerance against PyTorch, manifest fields, sha256 of the file,
op tables in each format's own op names with module paths for (nearly) every op.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hybridexport.export import convert, formats, manifest_path
from hybridexport.export.cache import TOOLS, sha256_path, size_bytes
from hybridexport.export.manifest import Manifest, find_manifests
from hybridexport.optable import OpTable

torch.set_num_threads(1)

pytestmark = pytest.mark.slow

MODELS = ["mobileformer-26m", "mobilevit-xxs", "iformer-t"]
FORMATS = ["coreml", "tflite", "onnx", "executorch"]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-families")


@pytest.fixture(scope="module")
def converted(out_dir) -> dict[str, dict[str, Manifest]]:
    """model → format → manifest; a failing format is recorded (and fails its own test) instead of aborting."""
    results: dict[str, dict[str, Manifest]] = {}
    for model in MODELS:
        errors: dict[str, Exception] = {}
        manifests = convert(
            model, to="all", out=out_dir, keep_going=True, on_error=lambda f, e, errors=errors: errors.update({f: e})
        )
        results[model] = {m.format: m for m in manifests}
        results[model].update({f"error:{f}": e for f, e in errors.items()})  # type: ignore[misc]
    return results


def _get(converted, model: str, fmt: str) -> Manifest:
    entry = converted[model]
    if fmt not in entry:
        pytest.fail(f"{model} → {fmt} failed: {entry.get('error:' + fmt)}")
    return entry[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", MODELS)
def test_artifact_and_manifest(converted, model, fmt):
    m = _get(converted, model, fmt)
    art = Path(m.path)
    assert art.exists() and art.name.endswith(formats.get(fmt).suffix) and (art.is_dir() == (fmt == "coreml"))
    assert m.model == model and m.format == fmt and m.resolution == (256 if model.startswith("mobilevit") else 224)
    assert m.precision == ("fp16" if fmt == "coreml" else "fp32")
    assert m.sha256 == sha256_path(art) and m.size_bytes == size_bytes(art) > 100_000
    assert set(TOOLS) <= set(m.versions) and m.versions["coremltools"] == "9.0"
    assert m.ops and all(isinstance(v, int) and v > 0 for v in m.ops.values())
    assert isinstance(m.rank5_tensors, int) and m.rank5_tensors >= 0
    assert m.seconds > 0 and m.extra["converter_seconds"] > 0 and m.extra["cache_key"]
    # the default rewrite pipeline ran and its applied passes are listed
    assert m.extra["rewrite"] is not None and m.passes == m.extra["rewrite"]["applied"]
    on_disk = Manifest.load(manifest_path(art))
    assert on_disk.sha256 == m.sha256 and on_disk.parity == m.parity
    assert json.loads(manifest_path(art).read_text())["parity"].keys() >= {
        "verified", "max_abs_err", "rel_l2_err", "top1_agreement", "reason", "method"
    }
    # the op table beside the artifact is the one the manifest's histogram and rank-5 count come from
    table = OpTable.load(m.op_table_path())
    assert table.format == fmt and table.artifact_sha256 == m.sha256
    assert m.ops == table.histogram() and m.rank5_tensors == table.rank5_tensors()
    assert table.inputs[0].shape == [1, 3, m.resolution, m.resolution] == m.input_shapes[0]


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "executorch"])
@pytest.mark.parametrize("model", MODELS)
def test_fp32_parity(converted, model, fmt):
    p = _get(converted, model, fmt).parity
    assert p.verified and p.n_inputs == 4 and p.tolerance == 1e-4
    assert p.rel_l2_err is not None and p.rel_l2_err <= 1e-4
    assert p.max_abs_err is not None and p.max_abs_err < 1e-2
    assert p.top1_agreement == 1.0


@pytest.mark.parametrize("model", MODELS)
def test_coreml_verified_by_the_mil_interpreter(converted, model):
    m = _get(converted, model, "coreml")
    assert m.parity.verified and m.parity.n_inputs == 4 and m.parity.tolerance == 1e-2, m.parity.reason
    assert m.parity.method == "MIL reference interpreter (fp16), not Core ML"
    assert 0 < m.parity.rel_l2_err <= 1e-2 and m.parity.top1_agreement is not None
    table = OpTable.load(m.op_table_path())
    assert [(t.name, t.shape) for t in table.inputs] == [("input", [1, 3, m.resolution, m.resolution])]
    assert [t.shape for t in table.outputs] == [[1, 1000]]
    compute = [o for o in table.ops if o.op_type in ("conv", "linear", "matmul")]
    assert compute and all(o.dtypes == ["fp16"] for o in compute)  # an FP16 program
    assert "conv" in m.ops and m.extra["coreml_target"] == "iOS15" and table.extra["spec_version"] == 6


@pytest.mark.parametrize("model", MODELS)
def test_format_specific_op_names(converted, model):
    assert "Conv" in _get(converted, model, "onnx").ops
    assert "CONV_2D" in _get(converted, model, "tflite").ops
    assert "conv" in _get(converted, model, "coreml").ops
    et = _get(converted, model, "executorch")
    assert et.extra["delegate_calls"] > 0
    assert any(k.startswith("XnnpackBackend:aten.convolution") for k in et.ops)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", MODELS)
def test_op_tables_map_ops_to_modules(converted, model, fmt):
    from hybridexport.zoo import build_model

    table = OpTable.load(_get(converted, model, fmt).op_table_path())
    mapped = [o.module for o in table.ops if o.module]
    assert len(mapped) >= 0.95 * len(table.ops), (model, fmt, table.mapped_share())
    # recorded paths name modules of the model: rewrites replace blocks (new children, e.g. per-head
    # attention) but keep the model's top-level structure, and untouched modules keep their exact paths
    names = set(dict(build_model(model).module.named_modules())) | {"<root>"}
    top = {n.split(".")[0] for n in names if n}
    assert all(p == "<root>" or p.split(".")[0] in top for p in mapped), sorted(
        p for p in mapped if p != "<root>" and p.split(".")[0] not in top)[:5]
    assert sum(p in names for p in mapped) >= 0.5 * len(mapped)


@pytest.mark.parametrize("model", MODELS)
def test_formats_key_modules_alike(converted, model):
    """The op tables of one model in four formats meet at block level (3 path components)."""
    cut = {fmt: {".".join(o.module.split(".")[:3]) for o in OpTable.load(_get(converted, model, fmt).op_table_path()).ops
                 if o.module} for fmt in FORMATS}
    common = set.intersection(*cut.values())
    assert len(common) >= 0.8 * len(cut["onnx"]), {f: sorted(v - common)[:5] for f, v in cut.items()}


def test_all_manifests_found(converted, out_dir):
    found = {(m.model, m.format) for m in find_manifests(out_dir)}
    assert found == {(model, fmt) for model in MODELS for fmt in FORMATS}
