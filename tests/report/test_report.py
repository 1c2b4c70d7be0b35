"""Renderers: Markdown, JUnit XML, JSON, text, Model Explorer node data; the CLI's --out handling."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from hybridexport.bench.suite import SuiteFailure, SuiteResult
from hybridexport.cli import main
from hybridexport.report.compare import compare
from hybridexport.report.junit import render_junit
from hybridexport.report.markdown import MARKER, render_markdown
from hybridexport.report.model_explorer import LATENCY_GRADIENT, entry_node_data, render_model_explorer
from hybridexport.report.text import render_text

from synthetic import DEFAULT_LAYERS, measured_profile, predicted_profile


def _scale(f):
    return {k: f for k in DEFAULT_LAYERS}


@pytest.fixture(scope="module")
def cmp():
    base = [measured_profile("iformer-t", seed=1), measured_profile("mobilevit-xxs", seed=5),
            predicted_profile("iformer-t"), predicted_profile("mobilevit-xxs"), predicted_profile("mobileformer-26m")]
    extra = {**DEFAULT_LAYERS, "stages.2.extra": ("Conv", 0.2)}
    new = [measured_profile("iformer-t", seed=3, scale={"stages.1.blocks.0.attn": 1.6}),
           measured_profile("mobilevit-xxs", seed=6, scale=_scale(0.8)),
           predicted_profile("iformer-t", layers=extra, units={"stem.conv": "gpu"}),
           predicted_profile("mobilevit-xxs")]
    return compare(base, new)


def test_fixture_verdicts(cmp):
    got = {e.key: e.verdict for e in cmp.entries}
    assert got == {"iformer-t@host/onnx": "regression", "mobilevit-xxs@host/onnx": "improvement",
                   "iformer-t@iphone13/coreml": "regression", "mobilevit-xxs@iphone13/coreml": "unchanged"}
    assert [m.key for m in cmp.missing] == ["mobileformer-26m@iphone13/coreml"]


def test_markdown(cmp):
    md = render_markdown(cmp)
    assert md.startswith(MARKER)
    assert "FAIL: 2 regression(s), 1 improvement(s), 1 unchanged, 1 missing" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "@" not in line]
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]) for line in table}
    for key in (("iformer-t", "host", "onnx"), ("mobilevit-xxs", "host", "onnx"), ("iformer-t", "iphone13", "coreml"),
                ("mobilevit-xxs", "iphone13", "coreml"), ("mobileformer-26m", "iphone13", "coreml")):
        assert key in rows
    assert "🔴 regression" in md and "🟢 improvement" in md and "⚪ unchanged" in md and "missing in new" in md
    assert "### Top regressed layers" in md
    top = md.split("### Top regressed layers")[1]
    assert top.index("stages.1.blocks.0.attn") < top.index("stem.conv")  # largest increase first
    assert "`stages.2.extra` *(added)*" not in md  # added is marked inside the code span's row
    assert "`stages.2.extra *(added)*`" in md
    assert "moved `stem.conv` ane → gpu" in md


def test_markdown_passes_when_nothing_regressed():
    md = render_markdown(compare(predicted_profile(), predicted_profile()))
    assert "✅" in md and "PASS" in md and "Top regressed" not in md


def test_junit_parses_and_fails_regressions(cmp):
    root = ET.fromstring(render_junit(cmp))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 5 == int(suite.get("tests"))
    failed = {f"{c.get('classname')}:{c.get('name')}" for c in cases if c.find("failure") is not None}
    assert failed == {"hybridexport.latency.iformer-t:host/onnx", "hybridexport.latency.iformer-t:iphone13/coreml"}
    assert int(suite.get("failures")) == 2 and int(root.get("failures")) == 2
    assert int(suite.get("skipped")) == 1
    fail = next(c for c in cases if c.get("name") == "host/onnx" and c.find("failure") is not None).find("failure")
    assert fail.get("type") == "LatencyRegression" and "%" in fail.get("message")
    assert "stages.1.blocks.0.attn" in fail.text
    root2 = ET.fromstring(render_junit(cmp, fail_on_missing=True))
    assert int(root2.find("testsuite").get("failures")) == 3


def test_json_and_text(cmp):
    d = json.loads(json.dumps(cmp.to_dict()))
    assert d["summary"] == {"regression": 2, "improvement": 1, "unchanged": 1, "missing": 1}
    assert d["exit_code"] == 1
    e = d["entries"][0]
    assert {"model", "device", "format", "base_ms", "new_ms", "ratio", "ci", "verdict", "layers"} <= set(e)
    assert e["layers"][0]["module"] in DEFAULT_LAYERS
    text = render_text(cmp)
    assert "FAIL: 2 regression(s)" in text and "iformer-t" in text and "\x1b[" not in text


def test_model_explorer_latency_overlay(cmp):
    e = cmp.entries[0]
    data = entry_node_data(e)
    assert set(data) == {"results", "gradient"}
    assert data["gradient"] == LATENCY_GRADIENT and data["gradient"][0]["stop"] == 0 and data["gradient"][-1]["stop"] == 1
    names = {r.name for r in e.new.layers}
    assert set(data["results"]) == names
    row = e.new.layers[0]
    assert data["results"][row.name]["value"] == pytest.approx(row.ms.median, rel=1e-5)
    keyed = entry_node_data(e, graph_id="main_graph")
    assert list(keyed) == ["main_graph"] and keyed["main_graph"]["results"] == data["results"]


def test_model_explorer_delta_overlay(cmp):
    e = next(x for x in cmp.entries if x.key == "iformer-t@iphone13/coreml")
    data = entry_node_data(e, overlay="delta")
    assert set(data) == {"results", "thresholds"}
    assert [t["value"] for t in data["thresholds"]][:2] == [-5.0, 5.0]
    assert data["results"]["stages.2.extra"]["value"] == "added"
    assert data["results"]["head.fc"]["value"] == pytest.approx(0.0)
    files = render_model_explorer(cmp, overlay="delta")
    assert len(files) == 4 and all(name.endswith(".delta.node_data.json") for name in files)
    for text in files.values():
        assert "results" in json.loads(text)


def test_cli_writes_every_format(tmp_path, capsys):
    base = SuiteResult(suite="t", created="now", profiles=[predicted_profile(), predicted_profile("mobilevit-xxs"),
                                                          measured_profile(seed=1)])
    new = SuiteResult(suite="t", created="now", profiles=[predicted_profile(scale=_scale(1.2)),
                                                         measured_profile(seed=2)],
                      failures=[SuiteFailure("mobilevit-xxs", "iphone13", "coreml", reason="UnsupportedOpError: x")])
    b, n = base.save(tmp_path / "base.json"), new.save(tmp_path / "new.json")
    outs = {ext: tmp_path / f"r.{ext}" for ext in ("md", "html", "xml", "json", "txt")}
    args = ["compare", str(b), str(n)]
    for p in outs.values():
        args += ["--out", str(p)]
    args += ["--out", str(tmp_path / "me") + "/"]
    assert main(args) == 1
    assert outs["md"].read_text().startswith(MARKER)
    assert "<svg" in outs["html"].read_text()
    assert ET.parse(outs["xml"]).getroot().tag == "testsuites"
    assert json.loads(outs["json"].read_text())["summary"]["regression"] == 1
    assert "UnsupportedOpError" in outs["md"].read_text()
    assert len(list((tmp_path / "me").glob("*.node_data.json"))) == 2
    # single model-explorer output to stdout, explicit format
    single = _single(tmp_path)
    assert main(["compare", single, single, "--format", "model-explorer"]) == 0
    assert "gradient" in json.loads(capsys.readouterr().out)
    # missing in new fails only when asked
    assert main(["compare", str(b), str(b), "--fail-on-missing"]) == 0
    assert main(["compare", str(n), str(n)]) == 0


def _single(tmp_path):
    p = tmp_path / "single.json"
    measured_profile(seed=1).save(p)
    return str(p)


def test_cli_refuses_unknown_extension(tmp_path, capsys):
    p = _single(tmp_path)
    assert main(["compare", p, p, "--out", str(tmp_path / "report.pdf")]) == 2
    assert "extension" in capsys.readouterr().err
    assert not (tmp_path / "report.pdf").exists()


def test_model_explorer_maps_ort_renamed_nodes_to_graph_nodes():
    p = measured_profile(n=10)
    p.layers[0].name = "node_conv2d_nchwc"
    p.layers[1].name = "node_conv2d"
    data = entry_node_data(compare(p, p).entries[0])
    assert "node_conv2d_nchwc" not in data["results"]
    want = p.layers[0].ms.median + p.layers[1].ms.median
    assert data["results"]["node_conv2d"]["value"] == pytest.approx(want, rel=1e-5)


def test_renderers_cope_without_layers():
    from hybridexport.errors import InputFileError
    from hybridexport.report.html import render_html

    a, b = predicted_profile(), predicted_profile(scale=_scale(1.5))
    a.layers, b.layers = [], []
    c = compare(a, b)
    assert c.entries[0].verdict == "regression" and c.entries[0].layers == []
    assert "<svg" in render_html(c) and "regression" in render_markdown(c)
    assert ET.fromstring(render_junit(c)).find("testsuite").get("failures") == "1"
    with pytest.raises(InputFileError, match="per-layer"):
        render_model_explorer(c)


def test_model_explorer_resolves_ort_names_with_the_exported_graph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from hybridexport.report.model_explorer import GraphIndex

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("matmul", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["conv2d"], name="node_Conv_1"),
                           helper.make_node("Relu", ["conv2d"], ["matmul"], name="node_MatMul_4")],
                          "main_graph", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g), str(path))
    p = measured_profile(n=10)
    p.layers[0].name = "conv2d_nchwc"
    p.layers[1].name = "node_MatMul_4/MatMulScaleFusion/"
    p.layers[2].name = "ReorderOutput"
    c = compare(p, p)
    data = entry_node_data(c.entries[0], graph=GraphIndex.from_onnx(path))["results"]
    assert {"node_Conv_1", "node_MatMul_4", "ReorderOutput"} <= set(data)
    assert "conv2d" not in data
    files = render_model_explorer(c, graph=path)
    assert "node_Conv_1" in json.loads(next(iter(files.values())))["results"]
    from hybridexport.errors import InputFileError

    with pytest.raises(InputFileError, match="not an ONNX model"):
        render_model_explorer(c, graph=_text_file(tmp_path))


def _text_file(tmp_path):
    p = tmp_path / "notonnx.onnx"
    p.write_text("hello", encoding="utf-8")
    return p
