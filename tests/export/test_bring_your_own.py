"""Bring your own model: models written here (a file with a factory, a module in Python, a ``.pt2``, two
inputs, a non-square input, a multi-scale backbone at 512×512) converted to all four formats with parity
where the runtime exists here, benched on the host and predicted for an iPhone 13 and a Pixel 8; and
artifacts made elsewhere (``torch.onnx``, litert-torch) benched without a manifest."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from hybridexport import bench, convert
from hybridexport.cli import main
from hybridexport.export.formats import NAMES
from hybridexport.zoo.refs import load_model

HYBRID = textwrap.dedent('''
    """A small ConvNet + attention hybrid (the shape of an iFormer stage)."""
    import torch
    from torch import nn


    class ConvBlock(nn.Module):
        def __init__(self, c, k=3):
            super().__init__()
            self.dw = nn.Conv2d(c, c, k, padding=k // 2, groups=c)
            self.bn = nn.BatchNorm2d(c)
            self.pw = nn.Conv2d(c, c, 1)

        def forward(self, x):
            return x + self.pw(nn.functional.gelu(self.bn(self.dw(x))))


    class AttnBlock(nn.Module):
        def __init__(self, c, heads):
            super().__init__()
            self.norm = nn.LayerNorm(c)
            self.attn = nn.MultiheadAttention(c, heads, batch_first=True)

        def forward(self, x):
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            n = self.norm(t)
            t = t + self.attn(n, n, n, need_weights=False)[0]
            return t.transpose(1, 2).reshape(b, c, h, w)


    class Hybrid(nn.Module):
        def __init__(self, width=16, heads=2, kernel=3, classes=10, features=False):
            super().__init__()
            self.features = features
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 4, 1), nn.BatchNorm2d(width), nn.ReLU())
            self.stage1 = ConvBlock(width, kernel)
            self.down = nn.Conv2d(width, 2 * width, 3, 2, 1)
            self.stage2 = AttnBlock(2 * width, heads)
            self.head = nn.Linear(2 * width, classes)

        def forward(self, x):
            a = self.stage1(self.stem(x))
            b = self.stage2(self.down(a))
            if self.features:  # a detection backbone: one feature map per scale
                return a, b
            return self.head(b.mean((2, 3)))


    class ImageAndTokens(nn.Module):
        """Two inputs: an image and learned-query tokens that attend to its features (Mobile-Former-like)."""

        def __init__(self, width=16):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 4, 1), nn.BatchNorm2d(width), nn.ReLU())
            self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
            self.head = nn.Linear(width, 5)

        def forward(self, image, tokens):
            f = self.stem(image).flatten(2).transpose(1, 2)
            t = tokens + self.attn(tokens, f, f, need_weights=False)[0]
            return self.head(t.mean(1))


    def make(width=16, heads=2, kernel=3, features=False):
        return Hybrid(width=width, heads=heads, kernel=kernel, features=features)


    def two_inputs(width=16):
        return ImageAndTokens(width)
''')


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("byo")
    (d / "hybrid.py").write_text(HYBRID)
    return d


def _module(workdir: Path, factory: str = "make", **kw: object) -> torch.nn.Module:
    return load_model(f"{workdir / 'hybrid.py'}:{factory}", input_shapes=[(1, 3, 64, 64)]).module if not kw else \
        load_model(f"{workdir / 'hybrid.py'}:{factory}({', '.join(f'{k}={v!r}' for k, v in kw.items())})").module


#: name → (model reference or builder, convert() keyword arguments)
CASES = {
    "factory": lambda d: (f"{d / 'hybrid.py'}:make(width=16, heads=2)", {"resolution": 64}),
    "python-api": lambda d: (_module(d), {"example_inputs": (torch.randn(1, 3, 64, 64),), "name": "my-variant"}),
    "pt2": lambda d: (_save_pt2(d), {}),
    "two-inputs": lambda d: (f"{d / 'hybrid.py'}:two_inputs", {"input_shapes": [(1, 3, 64, 48), (1, 6, 16)],
                                                                "input_names": ["image", "tokens"]}),
    "non-square": lambda d: (f"{d / 'hybrid.py'}:make(width=8)", {"input_shapes": [(1, 3, 256, 192)]}),
    "backbone-512": lambda d: (f"{d / 'hybrid.py'}:make(width=8, features=True)", {"resolution": 512}),
}


def _save_pt2(d: Path) -> str:
    path = d / "hybrid.pt2"
    if not path.exists():
        module = _module(d)
        with torch.no_grad():
            torch.export.save(torch.export.export(module, (torch.randn(1, 3, 64, 64),)), str(path))
    return str(path)


@pytest.fixture(scope="module")
def converted(workdir: Path) -> dict[str, dict]:
    """Every case converted to all four formats once (what the tests below read)."""
    out = {}
    for case, make in CASES.items():
        model, kwargs = make(workdir)
        manifests = convert(model, to=list(NAMES), out=workdir / "out", verify_inputs=2, **kwargs)
        out[case] = {"model": model, "kwargs": kwargs, "manifests": {m.format: m for m in manifests}}
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_all_four_formats_with_parity(converted: dict, case: str) -> None:
    mans = converted[case]["manifests"]
    assert sorted(mans) == sorted(NAMES)
    for fmt, m in mans.items():
        assert Path(m.path).exists()
        if fmt == "coreml" and not m.parity.n_inputs:
            assert "macOS" in m.parity.reason or "structur" in m.parity.reason
            continue
        assert m.parity.verified, (fmt, m.parity)
        assert m.parity.n_inputs == 2
    shapes = {tuple(map(tuple, m.input_shapes)) for m in mans.values()}
    assert len(shapes) == 1


def test_shapes_and_outputs_reach_the_artifacts(converted: dict) -> None:
    two = converted["two-inputs"]["manifests"]["onnx"]
    assert two.input_shapes == [[1, 3, 64, 48], [1, 6, 16]]
    assert "1x3x64x48+1x6x16" in Path(two.path).name
    import onnx

    graph = onnx.load(two.path, load_external_data=False).graph
    assert [i.name for i in graph.input] == ["image", "tokens"]
    wide = converted["non-square"]["manifests"]["tflite"]
    assert "1x3x256x192" in Path(wide.path).name and wide.input_shapes == [[1, 3, 256, 192]]
    backbone = converted["backbone-512"]["manifests"]
    from hybridexport.optable import OpTable

    for m in backbone.values():
        assert OpTable.load(m.op_table_path()).outputs.__len__() in (0, 2), m.format
    assert len(OpTable.load(backbone["onnx"].op_table_path()).outputs) == 2  # both feature maps


def test_python_api_and_pt2_keep_their_names(converted: dict) -> None:
    assert converted["python-api"]["manifests"]["onnx"].model == "my-variant"
    assert converted["pt2"]["manifests"]["onnx"].model == "hybrid.pt2"
    assert converted["factory"]["manifests"]["onnx"].model == "hybrid.py:make(heads=2, width=16)"


def test_shape_is_part_of_the_identity(workdir: Path, converted: dict) -> None:
    ref = f"{workdir / 'hybrid.py'}:make(width=8)"
    other = convert(ref, to="onnx", out=workdir / "out", input_shapes=[(1, 3, 128, 96)], verify_inputs=1)[0]
    first = converted["non-square"]["manifests"]["onnx"]
    assert other.path != first.path and Path(first.path).exists()
    again = convert(ref, to="onnx", out=workdir / "out", input_shapes=[(1, 3, 256, 192)], verify_inputs=2)[0]
    assert again.extra.get("reused") is True


@pytest.mark.parametrize("case", list(CASES))
def test_bench_host_and_predict_phones(converted: dict, workdir: Path, case: str) -> None:
    model, kwargs = converted[case]["model"], converted[case]["kwargs"]
    shapes = kwargs.get("input_shapes")
    ident = dict(out=workdir / "out", resolution=kwargs.get("resolution"),
                 input_shapes=[list(s) for s in shapes] if shapes else None)
    if not isinstance(model, str):
        model = load_model(model, example_inputs=kwargs["example_inputs"], name=kwargs["name"])
        ident = dict(out=workdir / "out")
    [host] = bench(model, device="host", runs=3, warmup=1, **ident)
    assert host.obtained == "measured" and host.total_ms.median > 0
    mans = converted[case]["manifests"]
    assert host.artifact_sha256 == mans[host.format].sha256  # the artifact convert made, not a new one
    for device, fmt in (("iphone13", "coreml"), ("pixel8", "tflite")):
        [p] = bench(model, device=device, precision="fp16" if fmt == "coreml" else "fp32", **ident)
        assert p.obtained == "predicted" and p.format == fmt and p.total_ms.median > 0
        assert p.artifact_sha256 == mans[fmt].sha256
        mapped = {r.module for r in p.layers if r.module}
        assert any(m.startswith(("stage", "stem", "attn", "head")) for m in mapped), (device, sorted(mapped)[:10])


def test_ablation_workflow(workdir: Path, converted: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """Two variants of one factory, predicted for an iPhone 13, compared layer by layer."""
    out = str(workdir / "out")
    a, b = workdir / "a.json", workdir / "b.json"
    for heads, path in ((1, a), (4, b)):
        ref = f"{workdir / 'hybrid.py'}:make(width=16, heads={heads})"
        assert main(["bench", ref, "--device", "iphone13", "--resolution", "64", "--out", out, "--json", str(path)]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) != 0  # two designs: refused without --allow-different
    assert "--allow-different" in capsys.readouterr().err
    code = main(["compare", str(a), str(b), "--allow-different", "--format", "json", "--out", str(workdir / "c.json")])
    assert code in (0, 1)
    report = json.loads((workdir / "c.json").read_text())
    text = json.dumps(report)
    assert "stage2" in text  # layers matched by module path


def _direct(workdir: Path) -> tuple[Path, Path]:
    import litert_torch

    module = _module(workdir)
    x = torch.randn(1, 3, 64, 64)
    onnx_path, tfl_path = workdir / "direct" / "mine.onnx", workdir / "direct" / "mine.tflite"
    onnx_path.parent.mkdir(exist_ok=True)
    if not onnx_path.exists():
        torch.onnx.export(module, (x,), str(onnx_path), dynamo=True, verbose=False)
        litert_torch.convert(module, (x,)).export(str(tfl_path))
    return onnx_path, tfl_path


def test_artifacts_made_elsewhere(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, tfl_path = _direct(workdir)
    for path in (onnx_path, tfl_path):
        [host] = bench(str(path), device="host", runs=3, warmup=1)
        assert host.obtained == "measured" and host.total_ms.median > 0
        for device in ("iphone13", "pixel8"):
            [p] = bench(str(path), device=device)
            assert p.obtained == "predicted" and p.total_ms.median > 0
            assert any(r.module.startswith("stage2") for r in p.layers), [r.module for r in p.layers][:10]
            if p.format != {"iphone13": "coreml", "pixel8": "tflite"}[device]:
                assert any("calibrated on" in n for n in p.notes)
    assert main(["info", str(onnx_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "onnx" and info["model"] is None and info["total_ops"] > 5
    assert info["inputs"][0]["shape"] == [1, 3, 64, 64] and info["mapped_share"] > 0.5


def test_info_on_a_core_ml_package(converted: dict, capsys: pytest.CaptureFixture[str]) -> None:
    pkg = converted["factory"]["manifests"]["coreml"].path
    assert main(["info", pkg, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "coreml" and info["model"] == "hybrid.py:make(heads=2, width=16)"
    assert sum(info["ops"].values()) == info["total_ops"] > 5
    assert isinstance(info["ane_findings"], list) and "ane_summary" in info
    assert main(["info", pkg, "--resolution", "64"]) != 0
    assert "only apply to a model" in capsys.readouterr().err


def test_info_on_own_models(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", f"{workdir / 'hybrid.py'}:two_inputs", "--input-shape", "1x3x64x48",
                 "--input-shape", "1x6x16", "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["input_shapes"] == [[1, 3, 64, 48], [1, 6, 16]] and two["macs"] > 0
    assert main(["info", f"{workdir / 'hybrid.py'}:make(features=True)", "--resolution", "512", "--json"]) == 0
    bb = json.loads(capsys.readouterr().out)
    assert bb["input_shape"] == [1, 3, 512, 512] and bb["macs"] > 0
