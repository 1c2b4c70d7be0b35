"""Per-op features from real exports of a small model: Core ML MIL, TFLite and ONNX agree with PyTorch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybridexport.predict.build import build_module, export_features
from hybridexport.predict.features import FeatureTable, reshape_kind, shape_stats
from hybridexport.predict.store import load_store, save_store

MODEL = "timm:mobilenetv3_small_050"


def torch_macs(module: nn.Module, res: int) -> int:
    """Conv/linear multiply-accumulates counted with forward hooks (the reference)."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        module(torch.zeros(1, 3, res, res))
    for h in hs:
        h.remove()
    return total


@pytest.fixture(scope="module")
def small() -> nn.Module:
    torch.set_num_threads(1)
    return build_module(MODEL)


@pytest.mark.parametrize("fmt", ["coreml", "tflite", "onnx"])
def test_features_match_pytorch_macs(small: nn.Module, fmt: str) -> None:
    ops = export_features(small, fmt, 160)
    ref = torch_macs(small, 160)
    macs = sum(o.macs for o in ops)
    assert abs(macs - ref) / ref < 0.01, (fmt, macs, ref)
    kinds = {o.kind for o in ops}
    assert {"conv_pw", "conv_dw", "linear"} <= kinds
    # squeeze-excite + hardswish blocks: some activations are fusable into their producer, and every
    # op but the first reads an activation produced by another op
    assert any(o.fusable for o in ops)
    assert sum(1 for o in ops if o.inputs) >= len(ops) - 2
    assert all(o.out_elems > 0 for o in ops if o.kind != "view")
    if fmt in ("tflite", "onnx"):  # these formats carry nn.Module paths in the graph
        convs = [o for o in ops if o.kind.startswith("conv")]
        assert sum(1 for o in convs if o.module) >= 0.9 * len(convs)
        assert any(o.module.startswith("blocks.") for o in convs)
    table = FeatureTable(model=MODEL, format=fmt, resolution=160, ops=ops)
    again = FeatureTable.from_compact(table.to_compact())
    assert again.to_compact() == table.to_compact()
    assert again.totals() == table.totals()


def test_shape_helpers() -> None:
    assert reshape_kind((1, 64, 14, 14), (1, 64, 196)) == "relayout"
    assert reshape_kind((1, 64, 196), (1, 64, 1, 196)) == "view"
    assert reshape_kind((1, 1, 64, 7, 7), (1, 64, 7, 7)) == "view"
    st = shape_stats([(1, 1, 64, 7, 7), (1, 2, 3, 4, 5, 6)], (1, 64, 7, 7))
    assert st == {"rank": 6, "erank": 5, "max_dim": 64, "last_dim": 7}


def test_store_roundtrip_is_deterministic(tmp_path) -> None:
    data = load_store("coreml", tmp_path)
    data["tables"]["coreml|x|224"] = {"model": "x", "format": "coreml", "resolution": 224, "backbone": False,
                                      "rows": []}
    a = save_store("coreml", data, tmp_path).read_bytes()
    b = save_store("coreml", load_store("coreml", tmp_path), tmp_path).read_bytes()
    assert a == b


def test_predicted_runner_on_a_coreml_artifact(tmp_path) -> None:
    """The runner reads a saved .mlpackage, maps MIL ops to nn.Module paths, and predicts deterministically."""
    import hashlib

    import coremltools as ct

    from hybridexport.bench.devices import load_device
    from hybridexport.bench.runners import BenchRequest, get_runner
    from hybridexport.export.manifest import Manifest, Parity
    from hybridexport.zoo import build_model

    torch.set_num_threads(1)
    lm = build_model(MODEL, resolution=160)
    x = lm.example_input()
    with torch.no_grad():
        traced = torch.jit.trace(lm.module, x, check_trace=False)  # as `hybridexport convert --to coreml`
    mlm = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=tuple(x.shape))], convert_to="mlprogram",
                     skip_model_load=True)
    path = tmp_path / "m.mlpackage"
    mlm.save(str(path))
    manifest = Manifest(model=MODEL, resolution=160, format="coreml", precision="fp16", path=str(path), size_bytes=0,
                        sha256=hashlib.sha256(b"x").hexdigest(), versions={}, passes=[],
                        parity=Parity(verified=False), ops={}, rank5_tensors=0, seconds=0.0)
    runner = get_runner("predicted")
    req = BenchRequest(device=load_device("iphone13"), manifest=manifest, model=lm)
    prof = runner.run(req)
    again = runner.run(req)
    assert [r.ms.median for r in prof.layers] == [r.ms.median for r in again.layers]
    assert prof.obtained == "predicted" and prof.format == "coreml"
    assert sum(r.ms.median for r in prof.layers) == pytest.approx(prof.total_ms.median, rel=1e-12)
    assert prof.total_ms.p10 <= prof.total_ms.median <= prof.total_ms.p90
    ops = [r for r in prof.layers if r.op_type != "overhead"]
    assert sum(1 for r in ops if r.module) >= 0.9 * len(ops)
    assert any(r.module.startswith("blocks.") for r in ops)
    assert prof.extra["heldout_error_pct"] > 0


class _ChannelShuffle(nn.Module):
    """Two branches concatenated, then ShuffleNet's channel shuffle (view, transpose, view)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1)
        n, c, h, w = y.shape
        return self.c(y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w))


def test_coreml_channel_shuffle_is_a_concat() -> None:
    """coremltools folds concat + channel shuffle into one interleaving concat; in the Neural Engine's
    channel-major layout that moves whole planes, so it is costed as a concat, not as a relayout."""
    ops = export_features(_ChannelShuffle().eval(), "coreml", 16)
    kinds = [o.kind for o in ops]
    assert kinds.count("concat") == 1 and not {"relayout", "transpose"} & set(kinds), kinds
    cat = next(o for o in ops if o.kind == "concat")
    assert len(cat.inputs) == 2 and any(cat.name in o.inputs for o in ops if o.kind == "conv_pw")
