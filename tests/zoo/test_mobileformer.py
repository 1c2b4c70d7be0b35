"""Mobile-Former: all variants build and run, parameter counts match the paper, and official-keyed
golden checkpoints reproduce the author-released code's logits (float64 and float32)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from hybridexport.errors import UnknownModelError
from hybridexport.zoo import build_model
from hybridexport.zoo.cards import variant_card
from hybridexport.zoo.mobileformer import create_mobileformer, elementwise_macs, rename_official_keys

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared/data/mobileformer-golden"
VARIANTS = ["26m", "52m", "96m", "151m", "214m", "294m", "508m"]
PAPER_PARAMS_M = {"508m": 14.0, "294m": 11.4, "214m": 9.4, "151m": 7.6, "96m": 4.6, "52m": 3.5, "26m": 3.2}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def golden(name: str) -> Path:
    path = GOLDEN / name
    if not path.is_file():
        pytest.fail(
            f"Mobile-Former golden file {path} is missing: the tests need ../shared/data/mobileformer-golden "
            "beside the repository (official checkpoints and io files made with AAboys/MobileFormer)"
        )
    return path


@cache
def built(variant: str) -> nn.Module:
    """One randomly initialised eval-mode model per variant, shared by the read-only tests."""
    torch.manual_seed(0)
    return create_mobileformer(f"mobileformer-{variant}").eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_builds_runs_and_matches_paper_params(variant: str) -> None:
    model = built(variant)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(params_m, 1) == PAPER_PARAMS_M[variant] == variant_card(f"mobileformer-{variant}")["params_m"]


def load_golden(variant: str) -> tuple[nn.Module, dict]:
    loaded = build_model(f"mobileformer-{variant}", checkpoint=golden(f"mobile_former_{variant}.pth"))
    report = dict(loaded.load_report)
    assert set(report.pop("loaded")) == set(loaded.module.state_dict())  # every key of the model loaded
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": [], "resized": []}
    io = torch.load(golden(f"mobile_former_{variant}.io.pt"), weights_only=True)
    return loaded.module, io


def run_with_intermediates(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits plus the official io-file intermediates (stem.out, features.{i}.out/.tokens, local_global.tokens)."""
    got: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, tuple):
                got[f"{name}.out"], got[f"{name}.tokens"] = output
            else:
                got[name] = output

        return hook

    hooks = [model.stem.register_forward_hook(keep("stem.out"))]
    hooks += [block.register_forward_hook(keep(f"features.{i}")) for i, block in enumerate(model.features)]
    hooks.append(model.local_global.register_forward_hook(keep("local_global.tokens")))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, got


@pytest.mark.parametrize("variant", ["26m", "151m"])
def test_golden_float32(variant: str) -> None:
    model, io = load_golden(variant)
    logits, got = run_with_intermediates(model, io["input"])
    # Intermediates in execution order: the first one off names where an implementation diverges.
    names = ["stem.out"] + [f"features.{i}.{k}" for i in range(len(model.features)) for k in ("tokens", "out")]
    for name in [*names, "local_global.tokens"]:
        ref = io[name]
        diff = (got[name] - ref).abs().max().item()
        assert diff < 1e-4 * max(1.0, ref.abs().max().item()), f"{variant}: first divergence at {name} ({diff:.2e})"
    diff = (logits - io["logits"]).abs().max().item()
    assert diff < 5e-4, f"{variant} float32 logits differ by {diff:.2e}"


@pytest.mark.parametrize("variant", ["26m", "151m"])
def test_golden_float64(variant: str) -> None:
    model, io = load_golden(variant)
    model = model.double()
    with torch.no_grad():
        logits = model(io["input"].double())
    diff = (logits - io["logits_fp64"]).abs().max().item()
    assert diff < 1e-9, f"{variant} float64 logits differ by {diff:.2e}"


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = built("26m")
    path = tmp_path / "mf26m.pth"
    torch.save(model.state_dict(), path)
    loaded = build_model("mobileformer-26m", checkpoint=path, seed=123)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))


def parse_official_keys(path: Path) -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape, _dtype = line.split("\t")
            keys[key] = tuple(int(n) for n in re.findall(r"\d+", shape))
    return keys


def test_official_294m_keys_map_onto_model() -> None:
    official = parse_official_keys(golden("official_keys_294m.txt"))
    assert len(official) > 600
    renamed = rename_official_keys({k: torch.empty(shape) for k, shape in official.items()})
    own = built("294m").state_dict()
    unmatched = [k for k in renamed if k not in own]
    assert not unmatched, f"official keys with no project key: {unmatched[:5]}"
    bad = [k for k, v in renamed.items() if tuple(v.shape) != tuple(own[k].shape)]
    assert not bad, f"shape mismatches: {bad[:5]}"
    assert set(renamed) == set(own), "some project keys have no official counterpart"
    # project names pass through unchanged (a checkpoint saved from our model round-trips)
    assert list(rename_official_keys(own)) == list(own)


def test_unknown_variant_is_a_clear_error() -> None:
    with pytest.raises(UnknownModelError, match="mobileformer-26m"):
        create_mobileformer("mobileformer-1m")


def test_paper_madds_within_two_percent_for_26m() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = built("26m")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 224, 224))
    madds = counter.get_total_flops() // 2 + elementwise_macs(model, 224)
    paper = variant_card("mobileformer-26m")["gmacs"] * 1e9
    assert abs(madds / paper - 1) < 0.02, f"{madds / 1e6:.2f} M vs paper {paper / 1e6:.0f} M"


def test_torch_export_26m() -> None:
    model = built("26m")
    x = torch.randn(1, 3, 224, 224)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-5)
