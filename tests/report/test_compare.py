"""compare(): noise-aware verdicts on synthetic Profiles built from seeded noise, and the CLI's exit codes."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.cli import main
from hybridexport.errors import InputFileError
from hybridexport.report.command import parse_threshold
from hybridexport.report.compare import aggregate_layers, compare

from synthetic import DEFAULT_LAYERS, measured_profile, predicted_profile

ALL = {k: 1.0 for k in DEFAULT_LAYERS}


def _scale(f: float) -> dict[str, float]:
    return {k: f for k in DEFAULT_LAYERS}


def _write(path, profile: Profile):
    profile.save(path)
    return str(path)


def test_aa_same_model_is_unchanged():
    for seed in range(5):
        cmp = compare(measured_profile(seed=seed), measured_profile(seed=seed + 100))
        (e,) = cmp.entries
        assert e.method == "bootstrap"
        assert e.verdict == "unchanged", (seed, e.ratio, e.ci)
        assert e.ci[0] <= e.ratio <= e.ci[1]
        assert cmp.exit_code() == 0


def test_aa_false_positive_rate_on_synthetic_noise():
    """Many A/A pairs with realistic noise: the 5% rule + 99% interval calls (almost) nothing."""
    calls = 0
    for seed in range(60):
        e = compare(measured_profile(seed=seed, noise=0.05, n=30),
                    measured_profile(seed=seed + 1000, noise=0.05, n=30)).entries[0]
        calls += e.verdict != "unchanged"
    assert calls <= 1


def test_clear_slowdown_is_a_regression_and_exits_1(tmp_path):
    base = measured_profile(seed=1)
    new = measured_profile(seed=2, scale=_scale(1.2))
    e = compare(base, new).entries[0]
    assert e.verdict == "regression"
    assert e.ci[0] > 1.05 and 1.15 < e.ratio < 1.25
    assert e.p_value < 1e-6
    assert main(["compare", _write(tmp_path / "a.json", base), _write(tmp_path / "b.json", new)]) == 1
    assert main(["compare", _write(tmp_path / "a.json", base), _write(tmp_path / "c.json", base)]) == 0


def test_clear_speedup_is_an_improvement():
    e = compare(measured_profile(seed=1), measured_profile(seed=2, scale=_scale(0.8))).entries[0]
    assert e.verdict == "improvement"
    assert compare(measured_profile(seed=1), measured_profile(seed=2, scale=_scale(0.8))).exit_code() == 0


def test_within_noise_change_above_threshold_is_not_significant():
    base = measured_profile(seed=104, noise=0.25, n=8)
    new = measured_profile(seed=204, noise=0.25, n=8, scale=_scale(1.08))
    e = compare(base, new).entries[0]
    assert e.ratio > 1.05, "precondition: the point estimate is beyond the threshold"
    assert e.ci[0] < 1.0 < e.ci[1]
    assert e.verdict == "unchanged"
    # without raw samples the same medians would be judged by the plain threshold alone
    for p in (base, new):
        p.total_ms.samples = []
    plain = compare(base, new).entries[0]
    assert plain.method == "threshold" and plain.verdict == "regression"
    assert any("raw samples" in n for n in plain.notes)


def test_background_load_does_not_look_like_a_regression():
    """60% of the new runs slowed by other processes: the median moves, the default p20 does not."""
    base = measured_profile(seed=11, n=40)
    busy = measured_profile(seed=14, n=40, contention=0.6)
    by_median = compare(base, busy, statistic="median").entries[0]
    assert by_median.ratio > 1.05 and by_median.verdict == "regression"
    e = compare(base, busy).entries[0]  # default: p20 and median must both show it
    assert e.statistic == "p20" and e.verdict == "unchanged"  # the weaker evidence is what is reported
    assert compare(base, busy, statistic="p20").entries[0].verdict == "unchanged"
    # a real slowdown under the same load is still caught
    slow_busy = measured_profile(seed=14, n=40, contention=0.6, scale=_scale(1.2))
    assert compare(base, slow_busy).entries[0].verdict == "regression"
    with pytest.raises(InputFileError, match="statistic"):
        compare(base, busy, statistic="mean")


def test_a_lucky_fast_tail_does_not_look_like_an_improvement():
    """A third of the new runs unusually fast: p20 moves, the median does not; the default needs both."""
    rng = np.random.default_rng(5)
    base = measured_profile(seed=21, n=40)
    new = measured_profile(seed=22, n=40)
    xs = np.array(new.total_ms.samples)
    lucky = rng.random(xs.size) < 0.35
    xs[lucky] *= 0.8
    new.total_ms = Stats.from_samples(xs.tolist())
    assert compare(base, new, statistic="p20").entries[0].verdict == "improvement"
    e = compare(base, new).entries[0]
    assert e.verdict == "unchanged" and e.statistic == "median"
    assert compare(base, new).statistic == "p20+median"


def test_verdict_is_deterministic():
    base, new = measured_profile(seed=3, noise=0.1, n=20), measured_profile(seed=4, noise=0.1, n=20)
    a, b = compare(base, new).entries[0], compare(base, new).entries[0]
    assert a.ci == b.ci and a.verdict == b.verdict


def test_measured_threshold_is_more_generous():
    base, new = measured_profile(seed=1), measured_profile(seed=2, scale=_scale(1.12))
    assert compare(base, new).entries[0].verdict == "regression"
    e = compare(base, new, measured_threshold=0.25).entries[0]
    assert e.verdict == "unchanged" and e.threshold == 0.25
    # predicted profiles keep the strict threshold
    p = compare(predicted_profile(), predicted_profile(scale=_scale(1.12)), measured_threshold=0.25).entries[0]
    assert p.verdict == "regression" and p.threshold == 0.05


@pytest.mark.parametrize(("factor", "verdict"), [(1.04, "unchanged"), (1.06, "regression"), (0.94, "improvement"),
                                                 (0.97, "unchanged")])
def test_predicted_profiles_use_a_plain_threshold(factor, verdict):
    e = compare(predicted_profile(), predicted_profile(scale=_scale(factor))).entries[0]
    assert e.method == "threshold" and e.ci is None
    assert e.verdict == verdict


def test_added_removed_and_moved_layers():
    layers_new = {k: v for k, v in DEFAULT_LAYERS.items() if k != "head.fc"}
    layers_new["stages.2.extra"] = ("Conv", 0.5)
    base = predicted_profile()
    new = predicted_profile(layers=layers_new, units={"stages.1.blocks.0.attn": "gpu"})
    e = compare(base, new).entries[0]
    assert [x.module for x in e.added()] == ["stages.2.extra"]
    assert [x.module for x in e.removed()] == ["head.fc"]
    moved = e.moved()
    assert [x.module for x in moved] == ["stages.1.blocks.0.attn"]
    assert moved[0].base_units == ["ane"] and moved[0].new_units == ["gpu"]
    assert any("moved" in n for n in e.notes)
    top = e.top_regressed()
    assert top[0].module == "stages.2.extra" and top[0].status == "added"


def test_rows_are_aggregated_by_module_path():
    p = measured_profile(seed=0, n=10)
    agg = aggregate_layers(p)
    assert set(agg) == set(DEFAULT_LAYERS)  # two runtime rows per module
    rows = [r for r in p.layers if r.module == "stem.conv"]
    assert len(rows) == 2
    per_run = [a + b for a, b in zip(rows[0].ms.samples, rows[1].ms.samples)]
    assert agg["stem.conv"].samples == pytest.approx(per_run)
    assert agg["stem.conv"].ms == pytest.approx(statistics.median(per_run))
    for r in rows:  # without samples, medians add up
        r.ms.samples = []
    assert aggregate_layers(p)["stem.conv"].ms == pytest.approx(sum(r.ms.median for r in rows))
    # an unmapped row keeps its own identity
    p.layers.append(LayerRow(name="Cast_7", op_type="Cast", module="", compute_unit="cpu", ms=Stats.point(0.01)))
    assert "<unmapped>/Cast_7" in aggregate_layers(p)


def test_layer_verdicts_find_the_slowed_layer():
    base = measured_profile(seed=1)
    new = measured_profile(seed=2, scale={"stages.1.blocks.0.attn": 1.5})
    e = compare(base, new).entries[0]
    by = {x.module: x for x in e.layers}
    assert by["stages.1.blocks.0.attn"].verdict == "regression"
    assert e.top_regressed(1)[0].module == "stages.1.blocks.0.attn"
    assert by["head.fc"].verdict == "unchanged"


def test_different_machines_are_informational():
    base = measured_profile(seed=1, environment={"machine": "x86_64", "cpu_model": "EPYC"})
    new = measured_profile(seed=2, scale=_scale(1.3), environment={"machine": "x86_64", "cpu_model": "Xeon"})
    cmp = compare(base, new)
    e = cmp.entries[0]
    assert e.verdict == "regression" and e.informational and not e.gating
    assert cmp.exit_code() == 0
    assert any("different machines" in n for n in e.notes)


def test_lists_of_profiles_match_by_model_device_format():
    base = [measured_profile("iformer-t", seed=1), predicted_profile("iformer-t"), predicted_profile("mobilevit-xxs")]
    new = [predicted_profile("iformer-t", scale=_scale(1.1)), measured_profile("iformer-t", seed=2),
           predicted_profile("mobileformer-26m")]
    cmp = compare(base, new)
    got = {e.key: e.verdict for e in cmp.entries}
    assert got == {"iformer-t@host/onnx": "unchanged", "iformer-t@iphone13/coreml": "regression"}
    missing = {(m.key, m.side) for m in cmp.missing}
    assert missing == {("mobilevit-xxs@iphone13/coreml", "new"), ("mobileformer-26m@iphone13/coreml", "base")}
    assert cmp.exit_code() == 1
    assert compare(base[1:], [predicted_profile("iformer-t")]).exit_code(fail_on_missing=True) == 1


def test_a_list_of_profiles_from_bench_json(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([predicted_profile().to_dict(), measured_profile().to_dict()]), encoding="utf-8")
    cmp = compare(path, path)
    assert len(cmp.entries) == 2 and all(e.verdict == "unchanged" for e in cmp.entries)


def test_duplicate_keys_are_refused():
    with pytest.raises(InputFileError, match="two profiles"):
        compare([predicted_profile(), predicted_profile()], [predicted_profile()])


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("0.05", 0.05), ("12.5%", 0.125), ("0", 0.0)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "abc", "-3%", "2000%"])
def test_parse_threshold_refuses(text):
    with pytest.raises(InputFileError):
        parse_threshold(text)


def _bad_files(tmp_path):
    good = predicted_profile().to_dict()
    files = {
        "missing": tmp_path / "nope.json",
        "not_json": tmp_path / "x.json",
        "a_list": tmp_path / "list.json",
        "neither": tmp_path / "neither.json",
        "old_schema": tmp_path / "old.json",
        "broken_profile": tmp_path / "broken.json",
        "broken_suite": tmp_path / "suite.json",
        "directory": tmp_path,
    }
    files["not_json"].write_text("{not json", encoding="utf-8")
    files["a_list"].write_text("[1, 2]", encoding="utf-8")
    files["neither"].write_text(json.dumps({"hello": 1}), encoding="utf-8")
    files["old_schema"].write_text(json.dumps({**good, "schema_version": 0}), encoding="utf-8")
    files["broken_profile"].write_text(json.dumps({k: v for k, v in good.items() if k != "model"}), encoding="utf-8")
    files["broken_suite"].write_text(json.dumps({"kind": "hybridexport-suite-results", "schema_version": 1,
                                                 "profiles": [{"total_ms": 3}]}), encoding="utf-8")
    return files


@pytest.mark.parametrize("which", ["missing", "not_json", "a_list", "neither", "old_schema", "broken_profile",
                                   "broken_suite", "directory"])
def test_bad_input_files_exit_2_with_one_line(tmp_path, capsys, which):
    bad = _bad_files(tmp_path)[which]
    good = _write(tmp_path / "good.json", predicted_profile())
    assert main(["compare", good, str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    with pytest.raises(InputFileError):
        compare(str(bad), good)


def test_bad_threshold_on_the_cli_exits_2(tmp_path, capsys):
    good = _write(tmp_path / "good.json", predicted_profile())
    assert main(["compare", good, good, "--threshold", "5"]) == 2
    assert "ambiguous" in capsys.readouterr().err


def test_busy_machine_makes_measured_verdicts_informational():
    quiet = {"cpu_model": "EPYC", "cpu_cores": 2, "load_average": [1.2, 1.0, 1.0]}
    busy = {**quiet, "load_average": [5.5, 4.0, 3.0]}
    base = measured_profile(seed=1, environment=quiet)
    e = compare(base, measured_profile(seed=2, environment=busy, scale=_scale(1.3))).entries[0]
    assert e.verdict == "regression" and e.informational and not e.gating
    assert any("busy machine (load 5.5 on 2 cores)" in n for n in e.notes)
    e = compare(base, measured_profile(seed=2, environment=quiet, scale=_scale(1.3))).entries[0]
    assert e.gating and not any("busy" in n for n in e.notes)


def test_profiles_without_input_shapes_pair_with_the_one_profile_of_their_model() -> None:
    """A baseline written before profiles recorded input shapes still gates the same model × device × format."""
    old = [predicted_profile("iformer-t"), predicted_profile("mobilevit-xxs")]
    new = [predicted_profile("iformer-t", scale={"stages.1.blocks.0.attn": 2.0}), predicted_profile("mobilevit-xxs")]
    for p in new:
        p.input_shapes = [[1, 3, 224, 224]]
    cmp = compare(old, new, threshold=0.05)
    assert len(cmp.entries) == 2
    slower = [e for e in cmp.entries if e.verdict == "regression"]
    assert len(slower) == 1 and not slower[0].informational
    # two shapes of one model on the new side: no guess, the old profile is reported missing
    extra = predicted_profile("iformer-t")
    extra.input_shapes = [[1, 3, 512, 512]]
    cmp = compare(old, [*new, extra], threshold=0.05)
    assert sum(1 for e in cmp.entries if e.verdict == "regression") == 0


def test_the_same_artifact_run_twice_is_never_a_gated_regression() -> None:
    """Identical file, runtime and settings on both sides: only the machine differs, so a slowdown is not gated."""
    env = {"cpu_model": "EPYC", "cpu_cores": 2, "runtime": "onnxruntime", "onnxruntime": "1.31.1", "threads": 1}
    base = measured_profile(seed=1, environment={**env, "load_average": [1.0, 1.0, 1.0]})
    slow = measured_profile(seed=2, scale=_scale(1.8), environment={**env, "load_average": [1.5, 1.0, 1.0]})
    base.artifact_sha256 = slow.artifact_sha256 = "ab" * 32
    e = compare(base, slow).entries[0]
    assert e.verdict == "regression" and e.informational and not e.gating
    assert any("same artifact (sha256 abababab…)" in n for n in e.notes)
    # a changed artifact is gated
    slow.artifact_sha256 = "cd" * 32
    assert compare(base, slow).entries[0].gating
    # so is the same artifact under other runtime settings (another ONNX Runtime, other thread count)
    slow.artifact_sha256 = base.artifact_sha256
    for key, value in (("onnxruntime", "1.32.0"), ("threads", 2)):
        other = measured_profile(seed=2, scale=_scale(1.8), environment={**env, key: value})
        other.artifact_sha256 = base.artifact_sha256
        assert compare(base, other).entries[0].gating, key
