"""benchmarks/rewrite_coverage.py: its model list stays outside the project's lists, and its rules for
attention in an op table, lost formats and the goal summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import rewrite_coverage as cov
from hybridexport.optable import OpRow, OpTable


def _table(*rows: tuple[str, str, str, list[str]]) -> OpTable:
    return OpTable(format="onnx", ops=[OpRow(name=n, op_type=t, kind=k, inputs=i) for n, t, k, i in rows])


def test_default_models_are_in_no_project_list():
    known = cov.project_models()
    assert "efficientvit_m0" in known and "mobilevit_xxs" in known  # HOST_TRAIN, the zoo (through HOST_PAIR too)
    assert "efficientvit_b2" in known  # the latency catalog
    assert cov.overlap(cov.MODELS, known) == []
    assert len(set(cov.MODELS)) == len(cov.MODELS) >= 40


def test_overlap_is_an_error_naming_the_list():
    [line] = cov.overlap(["levit_conv_256", "levit_256"], cov.project_models())
    assert line.startswith("error: levit_conv_256 is in PORTABILITY_MODELS")


def test_main_refuses_a_listed_model(capsys: pytest.CaptureFixture[str]):
    assert cov.main(["--models", "timm:resnet18"]) == 2
    assert "resnet18 is in HOST_TRAIN" in capsys.readouterr().err


def test_assigned_literal_missing_name(tmp_path: Path):
    (tmp_path / "m.py").write_text("A = ('x',)\n")
    assert cov.assigned_literal(tmp_path / "m.py", "A") == ("x",)
    with pytest.raises(LookupError, match="no top-level literal B"):
        cov.assigned_literal(tmp_path / "m.py", "B")


def test_attention_is_a_softmax_fed_by_a_matmul():
    attn = _table(("q", "Conv", "conv_pw", []), ("mm", "MatMul", "matmul", ["q", "q"]), ("s", "Mul", "eltwise", ["mm"]),
                  ("b", "Add", "eltwise", ["s"]), ("sm", "Softmax", "softmax", ["b"]))
    assert cov.attention_cores(attn) == 1
    assert cov.attention_cores(attn, hops=2) == 0  # the matmul is 3 ops back
    branches = _table(("c", "Conv", "conv_pw", []), ("r", "Reshape", "view", ["c"]), ("sm", "Softmax", "softmax", ["r"]))
    assert cov.attention_cores(branches) == 0  # SKNet / ResNeSt: softmax over branches of a conv
    behind_linear = _table(("mm", "MatMul", "matmul", []), ("fc", "Gemm", "linear", ["mm"]),
                           ("sm", "Softmax", "softmax", ["fc"]))
    assert cov.attention_cores(behind_linear) == 0
    assert cov.attention_cores(_table(("a", "scaled_dot_product_attention", "other", []))) == 1


def test_table_counts_normalise_op_types():
    t = _table(("a", "aten.permute_copy.default", "transpose", []), ("b", "Reshape", "view", ["a"]),
               ("c", "expand_dims", "view", ["b"]), ("d", "TRANSPOSE", "transpose", ["c"]))
    t.ops[0].output_shapes = [[1, 2, 3, 4, 5]]
    assert cov.table_counts(t) == {"rank5": 1, "reshape": 2, "transpose": 2, "attention": 0, "ops": 4}


def _cell(applied: list[str], rank5: int, bare: float = 10.0, convert: float = 12.0) -> dict:
    counts = {"rank5": rank5, "reshape": 1, "transpose": 1, "attention": 1, "ops": 9}
    return {"bare": bare, "convert": convert, "before": counts, "after": counts,
            "parity": {"verified": True, "rel_l2": 1e-3, "reason": ""},
            "rewrite": {"applied": applied,
                        "passes": [{"name": "attention-graph", "applied": False, "failed": False, "slower": False,
                                    "reason": "not applicable: nothing matched", "notes": []}],
                        "rel_err": 0.0, "seconds": 1.0}}


def test_summary_goals_and_lost_formats():
    rows = [
        {"model": "a", "resolution": 224, "formats": {"coreml": _cell(["attention-graph"], 0),
                                                      "onnx": _cell(["split-heads"], 0, 10.0, 20.0)}},
        {"model": "b", "resolution": 224, "formats": {"coreml": _cell([], 3),
                                                      "onnx": {"bare": 1.0, "convert_error": "X: y",
                                                               "unrewritten": "ok"}},
         "export": {"rank5": [4, 3], "sites": ["blocks.0 (Attn): 2× view"], "applied": []}},
        {"model": "c", "error": "Boom: z"},
    ]
    text = "\n".join(cov.summary_lines(rows, ["coreml", "onnx"]))
    assert "coreml: attention pass applied on 1/2 attention models (50%; goal ≥ 90%) NOT MET" in text
    assert "not rewritten: b: attention-graph: nothing matched" in text
    assert "no rank ≥ 5 tensor in the program on 1/2" in text
    assert "rank ≥ 5 left: b: 3→3: blocks.0 (Attn): 2× view" in text
    assert "already per head (attention-graph: no head axis) as done: 1/2" in text
    assert "matched and verified (applied, or judged slower and skipped): 1/2" in text
    rows[1]["formats"]["coreml"]["rewrite"]["passes"][0].update(slower=True, reason="skipped: slower")
    assert "matched and verified (applied, or judged slower and skipped): 2/2" in "\n".join(
        cov.summary_lines(rows, ["coreml"]))
    assert "coreml: median convert/bare 1.20×" in text and "MET" in text
    assert "onnx: median convert/bare 2.00× over 1 models" in text
    assert "lost a format (converted before the rewrite, not after): b (onnx)" in text
    assert "1 errors: c" in text
    lines = cov.row_lines(rows[1])
    assert any("LOST" in ln for ln in lines) and any("rank ≥ 5 left: blocks.0" in ln for ln in lines)


def test_no_attention_by_graph_overrides_the_code():
    cell = _cell([], 0)
    cell["before"] = cell["after"] = {**cell["before"], "attention": 0}
    assert not cov.has_attention({"code_attention": True, "formats": {"onnx": cell}})
    assert cov.has_attention({"code_attention": True, "formats": {}})
