"""CLI basics: `list`, `info`, and the one-line errors for bad model names and bad checkpoints."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from hybridexport.cli import main
from hybridexport.zoo import build_model, list_specs


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expect exit code 2 and a single ``error:`` line on stderr; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:")
    return err


@pytest.fixture(scope="module")
def xxs() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    return build_model("mobilevit-xxs", seed=1).module.state_dict()


def same_outputs(name: str, checkpoint, reference: dict[str, torch.Tensor]) -> bool:
    """Load ``checkpoint`` into ``name`` and compare its logits with a model holding ``reference``."""
    expected = build_model(name, seed=123)
    expected.module.load_state_dict(reference)
    got = build_model(name, checkpoint=checkpoint, seed=7)  # another seed: the weights must come from the file
    x = expected.example_input()
    with torch.no_grad():
        return torch.equal(expected.module(x), got.module(x))


# --- list -----------------------------------------------------------------------------------------------------

def test_list_json_has_every_variant(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [s.name for s in list_specs()]
    assert len(rows) == 16
    for row in rows:
        assert {"name", "family", "variant", "resolution", "params", "paper_params_m", "source"} <= set(row)
        assert isinstance(row["params"], int) and row["params"] > 0, row
        assert abs(row["params"] / 1e6 - row["paper_params_m"]) / row["paper_params_m"] < 0.05
    assert {r["alias"] for r in rows if r["alias"]} == {"iformer", "mobilevit", "mobileformer"}


def test_list_table_mentions_timm_and_aliases(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "timm:<name>" in out and "iformer-m" in out and "mobilevit-xxs" in out


# --- info -----------------------------------------------------------------------------------------------------

def test_info_json(capsys):
    assert main(["info", "mobilevit-xxs", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "mobilevit-xxs" and d["resolution"] == 256
    assert d["params_fused"] < d["params"] and d["macs"] > 0 and d["rank5_tensors"] > 0
    assert d["ops"].get("aten.softmax", 0) + d["ops"].get("aten.scaled_dot_product_attention", 0) > 0


def test_info_table(capsys):
    assert main(["info", "iformer-t", "--resolution", "128"]) == 0
    out = capsys.readouterr().out
    assert "iformer-t" in out and "Per stage" in out and "aten.conv2d" in out


def test_unknown_model_lists_near_matches(capsys):
    err = one_line_error(capsys, ["info", "iformer-x"])
    assert "unknown model 'iformer-x'" in err and "iformer-t" in err


def test_unknown_timm_model(capsys):
    err = one_line_error(capsys, ["info", "timm:resnet_500"])
    assert "timm" in err and "resnet" in err


# --- checkpoints ----------------------------------------------------------------------------------------------

def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip" + bytes(range(256)))
    assert "corrupt" in one_line_error(capsys, ["info", "mobilevit-xxs", "--checkpoint", str(bad)])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage" * 50)
    assert str(garbage) in one_line_error(capsys, ["info", "mobilevit-xxs", "--checkpoint", str(garbage)])
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert "safetensors" in one_line_error(capsys, ["info", "mobilevit-xxs", "--checkpoint", str(bad_st)])


def test_missing_checkpoint(tmp_path, capsys):
    assert "does not exist" in one_line_error(capsys, ["info", "mobilevit-xxs", "--checkpoint", str(tmp_path / "x.pth")])


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    path = tmp_path / "iformer_t.pth"
    torch.save(build_model("iformer-t").module.state_dict(), path)
    err = one_line_error(capsys, ["info", "mobilevit-xxs", "--checkpoint", str(path)])
    assert "does not fit" in err and "another architecture" in err


class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: the file appears iff the pickle ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_executing_pickle_is_refused(tmp_path, capsys, xxs, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": dict(xxs), "hook": _Payload(str(marker))}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as fh:
            pickle.dump(payload, fh)
    assert not marker.exists()
    err = one_line_error(capsys, ["info", "mobilevit-xxs", "--checkpoint", str(path)])
    assert "refused" in err
    assert not marker.exists(), "loading the checkpoint executed code from the pickle"


def test_iformer_checkpoint_round_trip(tmp_path, capsys):
    reference = build_model("iformer-t", seed=5).module.state_dict()
    path = tmp_path / "iformer_t.pth"
    torch.save(reference, path)
    assert same_outputs("iformer-t", path, reference)
    assert main(["info", "iformer-t", "--checkpoint", str(path), "--resolution", "64", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["checkpoint"] == str(path) and d["params_fused"] == 2_873_032


def test_safetensors_round_trip(tmp_path, xxs):
    from safetensors.torch import save_file

    path = tmp_path / "xxs.safetensors"
    save_file({k: v.contiguous() for k, v in xxs.items()}, str(path))
    assert same_outputs("mobilevit-xxs", path, xxs)


@pytest.mark.parametrize("layout", ["model", "state_dict", "module_prefix", "nested"])
def test_wrapped_checkpoint_layouts(tmp_path, xxs, layout):
    sd = dict(xxs)
    wrapped = {
        "model": {"model": sd, "epoch": 3},
        "state_dict": {"state_dict": sd, "optimizer_name": "adamw"},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "nested": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / f"{layout}.pth"
    torch.save(wrapped, path)
    assert same_outputs("mobilevit-xxs", path, xxs)


def test_converter_import_warnings_are_quiet_unless_verbose(monkeypatch, capsys):
    import logging

    from hybridexport.cli import NOISY_LOGGERS

    for name in NOISY_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    monkeypatch.setenv("HYBRIDEXPORT_VERBOSE", "1")
    assert main(["list", "--json"]) == 0
    assert all(logging.getLogger(n).level == logging.NOTSET for n in NOISY_LOGGERS)
    monkeypatch.delenv("HYBRIDEXPORT_VERBOSE")
    assert main(["list", "--json"]) == 0
    assert all(logging.getLogger(n).level == logging.ERROR for n in NOISY_LOGGERS)
    capsys.readouterr()


@pytest.mark.parametrize("argv", [["convert", "iformer-t", "--resolution", "-5"], ["bench", "--top"], ["nosuch"],
                                  ["convert"], ["compare", "a.json"], ["bench", "--threads", "0"]])
def test_usage_errors_are_one_line_naming_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own errors (bad value, missing argument, unknown command) are one line with where help is."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "error:" in err and "--help'" in err and "usage:" not in err
