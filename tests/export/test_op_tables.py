"""Op tables of real artifacts of a small model: Core ML MIL, TFLite, ONNX and ExecuTorch agree with PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hybridexport.export import convert, formats
from hybridexport.latency.features import FeatureTable
from hybridexport.opkinds import reshape_kind, shape_stats
from hybridexport.optable import OpTable

from models import loaded

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
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """The model in deployment form (reparameterize only, as calibration converts it) in every format."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("op-tables")
    mans = convert(MODEL, to="all", out=out, resolution=160, passes=["reparameterize"], verify_inputs=1)
    return {m.format: Path(m.path) for m in mans}


@pytest.mark.parametrize("fmt", ["coreml", "tflite", "onnx", "executorch"])
def test_op_tables_match_pytorch_macs_and_map_modules(artifacts, fmt: str) -> None:
    from hybridexport.zoo import build_model

    table = OpTable.load(Path(str(artifacts[fmt]) + ".ops.json.gz"))
    ops = table.ops
    ref = torch_macs(build_model(MODEL, resolution=160).module, 160)
    macs = sum(o.macs for o in ops)
    assert abs(macs - ref) / ref < 0.01, (fmt, macs, ref)
    kinds = {o.kind for o in ops}
    assert {"conv_pw", "conv_dw", "linear"} <= kinds
    # squeeze-excite + hardswish blocks: some activations are fusable into their producer, and every
    # op but the first reads an activation produced by another op (ExecuTorch also copies a few scalar
    # constants at run time)
    assert any(o.fusable for o in ops)
    assert sum(1 for o in ops if o.inputs or o.out_elems <= 1) >= len(ops) - 2
    assert all(o.out_elems > 0 for o in ops if o.kind != "view")
    assert all(o.output_shapes and o.dtypes for o in ops if o.kind != "other")
    assert all(o.bytes > 0 for o in ops if o.kind.startswith("conv"))
    # every format names the module of (nearly) every conv: from its own metadata, or Core ML's scopes
    convs = [o for o in ops if o.kind.startswith("conv")]
    assert sum(1 for o in convs if o.module) >= 0.9 * len(convs)
    assert any(o.module.startswith("blocks.") for o in convs)
    # the table read back from the file alone is the one convert wrote, but for what only the conversion
    # knew: Core ML's module scopes; ExecuTorch's file alone is its ETRecord's edge program (before delegation)
    again = formats.get(fmt).op_table(artifacts[fmt])
    def facts(o):  # noqa: E306
        return {k: v for k, v in o.to_dict().items() if k not in ("module", "module_source")}

    if fmt in ("onnx", "tflite", "coreml"):
        assert [facts(o) for o in again.ops] == [facts(o) for o in ops]
    if fmt in ("onnx", "tflite"):
        assert sum(a.module == b.module for a, b in zip(again.ops, ops)) >= 0.95 * len(ops)
    if fmt == "executorch":
        assert again.ops and again.mapped_share() >= 0.9
    ft = FeatureTable(model=MODEL, format=fmt, resolution=160, ops=ops)
    back = FeatureTable.from_compact(ft.to_compact())
    assert back.to_compact() == ft.to_compact() and back.totals() == ft.totals()


def test_shape_helpers() -> None:
    assert reshape_kind((1, 64, 14, 14), (1, 64, 196)) == "relayout"
    assert reshape_kind((1, 64, 196), (1, 64, 1, 196)) == "view"
    assert reshape_kind((1, 1, 64, 7, 7), (1, 64, 7, 7)) == "view"
    st = shape_stats([(1, 1, 64, 7, 7), (1, 2, 3, 4, 5, 6)], (1, 64, 7, 7))
    assert st == {"rank": 6, "erank": 5, "max_dim": 64, "last_dim": 7}


class _ChannelShuffle(nn.Module):
    """Two branches concatenated, then ShuffleNet's channel shuffle (view, transpose, view)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1)
        n, c, h, w = y.shape
        return self.c(y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w))


def test_coreml_channel_shuffle_is_a_concat(tmp_path) -> None:
    """coremltools folds concat + channel shuffle into one interleaving concat; in the Neural Engine's
    channel-major layout that moves whole planes, so it is costed as a concat, not as a relayout."""
    [m] = convert(loaded(_ChannelShuffle(), name="shuffle"), to="coreml", out=tmp_path, rewrite=False, verify_inputs=0)
    ops = OpTable.load(m.op_table_path()).ops
    kinds = [o.kind for o in ops]
    assert kinds.count("concat") == 1 and not {"relayout", "transpose"} & set(kinds), kinds
    cat = next(o for o in ops if o.kind == "concat")
    assert len(cat.inputs) == 2 and any(cat.name in o.inputs for o in ops if o.kind == "conv_pw")
