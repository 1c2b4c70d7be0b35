"""Model references: ``file.py:factory(...)``, ``.pt2`` files, modules in Python, and their one-line errors."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from hybridexport.cli import main
from hybridexport.errors import HybridExportError
from hybridexport.zoo.refs import (
    ModelFileError,
    check_reference,
    load_model,
    load_pt2,
    model_identity,
    parse_kwargs,
)

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width=8, depth=1):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, 2, 1)
            self.blocks = nn.Sequential(*[nn.Conv2d(width, width, 3, 1, 1) for _ in range(depth)])
            self.head = nn.Linear(width, 4)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    def make(width=8, depth=1):
        return Net(width, depth)

    def broken(width=8):
        raise ValueError("width must be even")

    def not_a_model():
        return {"weights": 1}
''')


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    p = tmp_path / "mynet.py"
    p.write_text(MODEL_FILE)
    return p


def test_factory_with_literal_kwargs(model_file: Path) -> None:
    loaded = load_model(f"{model_file}:make(width=12, depth=2)")
    assert loaded.name == "mynet.py:make(depth=2, width=12)"  # sorted: one name per call
    assert loaded.module.stem.out_channels == 12 and len(loaded.module.blocks) == 2
    assert loaded.input_shapes == [(1, 3, 224, 224)]
    assert not loaded.module.training
    again = load_model(f"{model_file}:make(depth=2, width=12)", input_shapes=[(1, 3, 64, 48)])
    assert again.name == loaded.name and again.input_shapes == [(1, 3, 64, 48)]
    assert again.weights_sha256() == loaded.weights_sha256()  # seeded init
    assert model_identity(f"{model_file}:make(width=12, depth=2)", None, None) == (loaded.name, [[1, 3, 224, 224]])


def test_kwargs_are_literals_never_evaluated(tmp_path: Path, model_file: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ModelFileError, match="not a Python literal"):
        load_model(f"{model_file}:make(width=__import__('pathlib').Path('{marker}').touch())")
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="by name"):
        parse_kwargs("8, depth=2", "f.py:make(8, depth=2)")
    assert parse_kwargs("a=(1, 2), b={'k': [0.5]}, c=None", "x") == {"a": (1, 2), "b": {"k": [0.5]}, "c": None}


@pytest.mark.parametrize(("ref", "message"), [
    ("{file}:missing", r"has no function 'missing' \(it defines: .*make"),
    ("{file}:broken", r"raised ValueError: width must be even; fix the factory"),
    ("{file}:not_a_model", "returned a dict, not a torch.nn.Module"),
    ("{dir}/absent.py:make", "does not exist"),
    ("{file}", "names a file but no factory; pass .*mynet.py:FACTORY"),
    ("{file}:make(width=", "check the factory name and the brackets"),
    ("{file}:make(width=)", "cannot read the arguments"),
    ("{dir}/weights.h5", r"a \.h5 file is not a model"),
    ("{dir}/absent.pt2", "does not exist"),
])
def test_reference_errors_are_one_line(model_file: Path, ref: str, message: str) -> None:
    (model_file.parent / "weights.h5").write_bytes(b"\x89HDF")
    text = ref.format(file=model_file, dir=model_file.parent)
    with pytest.raises(HybridExportError, match=message) as info:
        load_model(text)
    assert "\n" not in str(info.value)


def test_import_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nraise RuntimeError('no GPU here')\ndef make():\n    pass\n")
    with pytest.raises(ModelFileError, match=r"importing .*bad.py failed: RuntimeError: no GPU here"):
        load_model(f"{bad}:make")


def test_cli_errors_before_building(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", f"{model_file}:not_a_model"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not a torch.nn.Module" in err and len(err.splitlines()) == 1
    assert main(["convert", f"{model_file}:make", "--resolution", "64", "--input-shape", "1x3x64x64"]) != 0
    assert "pass one" in capsys.readouterr().err


@pytest.mark.parametrize(("shape", "message"), [("1x3x0x224", "dimension of 0"), ("abc", "not a shape"),
                                                 ("1x3x-2x4", "not a shape|dimension")])
def test_bad_input_shape(shape: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["convert", "iformer-t", "--input-shape", shape])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--input-shape" in err
    import re

    assert re.search(message, err)


def test_module_needs_inputs_and_uses_given_examples() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 6, 2))
    with pytest.raises(ModelFileError, match="example_inputs"):
        load_model(net)
    x = torch.randn(1, 3, 8, 6)
    loaded = load_model(net, example_inputs=(x,), name="variant-a")
    assert loaded.name == "variant-a" and loaded.input_shapes == [(1, 3, 8, 6)] and loaded.resolution == 0
    assert torch.equal(loaded.example_inputs()[0], x)  # the user's example traces the model
    assert not torch.equal(loaded.example_inputs(seed=1)[0], x)


def test_artifact_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(HybridExportError, match="is an exported artifact, not a model"):
        check_reference(str(tmp_path / "m.tflite"))


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) * y


def test_pt2_round_trip(tmp_path: Path) -> None:
    net = Two().eval()
    args = (torch.randn(2, 4), torch.randn(2, 3))
    path = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(net, args), str(path))
    loaded = load_model(str(path))
    assert loaded.name == "two.pt2" and loaded.input_shapes == [(2, 4), (2, 3)]
    xs = loaded.example_inputs()
    assert torch.allclose(loaded.module(*xs), net(*xs))
    assert model_identity(str(path), None, None) is None  # its shapes are inside: known once loaded


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path(self.marker).touch, ())


def _rewrite_archive(path: Path, edit) -> None:  # noqa: ANN001
    import io
    import zipfile

    with zipfile.ZipFile(path) as src:
        items = [(i, src.read(i.filename)) for i in src.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info, data in items:
            new = edit(info.filename, data)
            if new is not None:
                dst.writestr(info, new)
        for name, data in getattr(edit, "extra", {}).items():
            dst.writestr(name, data)
    path.write_bytes(out.getvalue())


def _malicious_pt2(tmp_path: Path, marker: Path, vector: str) -> Path:
    """A real ``torch.export.save`` archive with one blob replaced by a pickle that runs code, at one of the
    places ``torch.export.load`` unpickles with a full unpickler: the sample inputs (its weights_only
    fallback in ``serialize.deserialize_torch_artifact``), a ``use_pickle`` weight, an opaque constant."""
    import io
    import json
    import pickle

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    path = tmp_path / f"evil-{vector}.pt2"
    torch.export.save(torch.export.export(Net(), (torch.randn(2, 4),)), str(path))
    buf = io.BytesIO()
    torch.save(Payload(str(marker)), buf)
    saved = buf.getvalue()

    def edit(name: str, data: bytes) -> bytes:
        if vector == "sample-inputs" and name.endswith("data/sample_inputs/model.pt"):
            return saved
        if vector == "pickled-weight" and name.endswith("data/weights/model_weights_config.json"):
            cfg = json.loads(data)
            cfg["config"]["lin.weight"]["use_pickle"] = True
            return json.dumps(cfg).encode()
        if vector == "pickled-weight" and name.endswith("data/weights/weight_0"):
            return saved
        if vector == "opaque-constant" and name.endswith("data/constants/model_constants_config.json"):
            prefix = name[: -len("data/constants/model_constants_config.json")]
            edit.extra = {f"{prefix}data/constants/opaque_obj_0": pickle.dumps(Payload(str(marker)))}
            return json.dumps({"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False,
                                                   "use_pickle": True, "tensor_meta": None}}}).encode()
        return data

    _rewrite_archive(path, edit)
    return path


VECTORS = ("sample-inputs", "pickled-weight", "opaque-constant")


@pytest.mark.parametrize("vector", VECTORS)
def test_malicious_pt2_is_refused_and_never_runs(tmp_path: Path, vector: str) -> None:
    marker = tmp_path / "payload-ran"
    path = _malicious_pt2(tmp_path, marker, vector)
    with pytest.raises(ModelFileError, match="refused to load|not a loadable ExportedProgram") as info:
        load_model(str(path))
    assert "\n" not in str(info.value)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("vector", VECTORS[:2])
def test_the_malicious_archives_are_live(tmp_path: Path, vector: str) -> None:
    """Control: torch's own loader runs these payloads (so the refusal above is what stops them)."""
    marker = tmp_path / "payload-ran"
    path = _malicious_pt2(tmp_path, marker, vector)
    with contextlib.suppress(Exception):  # the program may be unusable after the payload ran
        torch.export.load(str(path))
    assert marker.exists()


def test_pt2_that_is_not_an_archive(tmp_path: Path) -> None:
    p = tmp_path / "x.pt2"
    p.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a .pt2 archive"):
        load_pt2(p)
