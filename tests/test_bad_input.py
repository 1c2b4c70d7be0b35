"""Bad input found in a hardening review: each case exits 2 with one `error:` line, before any work.

The cases are those the review reported (a regression gate fooled by bad profiles, outputs under a file,
names that escape the results folder, calibration data without its columns, a checkpoint for another
model); each test fails on the behaviour the review saw.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from hybridexport.cli import main

from synthetic import measured_profile, predicted_profile


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    return err


def _edit(path: Path, profile: Any, change: Any) -> str:
    d = profile.to_dict()
    change(d)
    path.write_text(json.dumps(d))
    return str(path)


@pytest.fixture
def base(tmp_path: Path) -> str:
    p = tmp_path / "base.json"
    predicted_profile("iformer-t").save(p)
    return str(p)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["total_ms"].update(median=-5.0), r"median is -5.0"),
    (lambda d: d["total_ms"].update(median=0.0, p10=0.0, p90=0.0), r"time ≤ 0"),
    (lambda d: d["total_ms"].update(median="fast"), r"median is 'fast', not a number"),
    (lambda d: d.update(layers=[]), r"no layers \(empty or truncated\)"),
    (lambda d: d["layers"][0]["ms"].update(median=math.inf, p90=math.inf), r"layers\[0\]"),
])
def test_compare_refuses_a_bad_new_profile(change, message, base, tmp_path, capsys) -> None:
    new = _edit(tmp_path / "new.json", predicted_profile("iformer-t"), change)
    err = one_line_error(capsys, ["compare", base, new])
    assert "new.json" in err
    import re

    assert re.search(message, err), err


@pytest.mark.parametrize("value", [math.nan, -1.0])
def test_compare_refuses_measured_samples_that_are_not_times(value, tmp_path, capsys) -> None:
    b = _edit(tmp_path / "b.json", measured_profile(seed=1), lambda d: None)

    def bad(d: dict) -> None:
        d["total_ms"]["samples"] = [value] * len(d["total_ms"]["samples"])

    # NaN is not JSON: written the way Python's json module would write it
    new = _edit(tmp_path / "n.json", measured_profile(seed=2), bad)
    assert "samples[0]" in one_line_error(capsys, ["compare", b, new])


def test_compare_pairs_only_like_with_like(base, tmp_path, capsys) -> None:
    other = _edit(tmp_path / "other.json", predicted_profile("mobilevit-xxs"), lambda d: d.update(device="pixel8"))
    err = one_line_error(capsys, ["compare", base, other])
    assert "not like with like" in err and "--allow-different" in err
    assert main(["compare", base, other, "--allow-different"]) in (0, 1)


def test_compare_caps_gzip_input(base, tmp_path, capsys) -> None:
    bomb = tmp_path / "bomb.json.gz"
    with gzip.open(bomb, "wb") as f:
        for _ in range(270):
            f.write(b" " * (1 << 20))
    assert bomb.stat().st_size < 2 << 20
    assert "more than 256 MiB" in one_line_error(capsys, ["compare", str(bomb), base])


def test_outputs_under_a_file_are_refused_first(tmp_path, capsys, base) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "lies under the file" in one_line_error(capsys, ["convert", "tinynet", "--to", "onnx",
                                                            "--out", str(afile / "x")])
    assert "lies under the file" in one_line_error(capsys, ["compare", base, base, "--out", str(afile / "r.md")])


def test_suite_names_cannot_leave_the_results_folder(tmp_path, capsys) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text('name = "../../../../tmp/x"\n[[run]]\nmodel = "tinynet"\ndevice = "iphone13"\n')
    assert "suite name '../../../../tmp/x' must be" in one_line_error(capsys, ["bench", "--suite", str(suite)])


def test_calibrate_names_unknown_devices_and_missing_columns(tmp_path, capsys) -> None:
    assert "unknown device 'foo'" in one_line_error(capsys, ["calibrate", "--device", "foo"])
    data = tmp_path / "bad.csv"
    data.write_text("a,b\n1,2\n")
    err = one_line_error(capsys, ["calibrate", "--device", "iphone13", "--data", str(data)])
    assert "lacks the column(s) model" in err


def test_allow_mismatch_refuses_a_checkpoint_that_shares_no_key(tmp_path, capsys) -> None:
    ckpt = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, ckpt)
    err = one_line_error(capsys, ["info", "mobilevit-xxs", "--checkpoint", str(ckpt), "--allow-mismatch"])
    assert "shares no key" in err and "0 of" in err


def test_an_option_that_cannot_apply_is_an_error(capsys) -> None:
    assert "only applies to Core ML" in one_line_error(capsys, ["convert", "tinynet", "--to", "onnx",
                                                                "--coreml-image-input"])
