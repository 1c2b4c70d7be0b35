"""Model references: every way a user names a model, turned into a :class:`~hybridexport.zoo.LoadedModel`.

* a zoo name (``iformer-m``) or ``timm:<name>``, optionally with literal keyword arguments for
  ``timm.create_model`` (``timm:iformer_m(features_only=True)``);
* ``path/to/file.py:factory`` or ``file.py:factory(width=0.75, depth=12)``: imports the file (this runs
  the user's own code, which is what they asked for) and calls ``factory(**kwargs)``; the arguments are
  Python literals, parsed with ``ast.literal_eval``, never ``eval``;
* ``model.pt2``: an ExportedProgram saved with ``torch.export.save``, loaded so that nothing but tensors
  is ever unpickled (:func:`load_pt2`);
* in Python, an ``nn.Module`` (or an ExportedProgram) with ``example_inputs`` or ``input_shapes``.

Input shapes: ``input_shapes`` (one per ``forward`` argument, e.g. from ``--input-shape 1x3x512x384``), else
a ``.pt2``'s own example inputs or the given example inputs, else one (1, 3, R, R) image at the model's
resolution (``--resolution``; 224 for a model file).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.errors import HybridExportError, UnknownModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.zoo import LoadedModel

_FACTORY = re.compile(r"^(?P<path>[^:]*\.py):(?P<func>[A-Za-z_]\w*)(?:\((?P<args>.*)\))?$", re.S)
_TIMM_CALL = re.compile(r"^timm:(?P<name>[\w.\-]+)\((?P<args>.*)\)$", re.S)
DEFAULT_RESOLUTION = 224


class ModelFileError(HybridExportError):
    """A model file, factory or saved program that cannot give a model."""


def is_reference(text: str) -> bool:
    """Whether ``text`` names a model file (``.py:factory``) or a saved program (``.pt2``), not a zoo name."""
    return bool(_FACTORY.match(text.strip())) or text.strip().endswith(".pt2")


def file_of(ref: str) -> str | None:
    """The file path inside a ``file.py:factory(...)`` or ``.pt2`` reference (None for zoo names)."""
    text = ref.strip()
    m = _FACTORY.match(text)
    if m is not None:
        return m["path"]
    return text if text.endswith(".pt2") else None


def parse_kwargs(text: str, ref: str) -> dict[str, Any]:
    """``width=0.75, depth=12`` → ``{"width": 0.75, "depth": 12}``: keyword arguments whose values are literals."""
    if not text.strip():
        return {}
    how = "write them as name=literal, e.g. file.py:make(width=0.75, depth=12)"
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: the user sees our error instead
            warnings.simplefilter("ignore", SyntaxWarning)
            call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise ModelFileError(f"cannot read the arguments of '{ref}' ({exc.msg}); {how}") from None
    except (ValueError, MemoryError, RecursionError) as exc:  # an over-long int, operators nested too deeply
        why = (str(exc).splitlines() or [""])[0][:80] if isinstance(exc, ValueError) else "nested too deeply"
        raise ModelFileError(f"cannot read the arguments of '{ref}' ({why}); {how}") from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        # ")" inside the text closed the call early: "a=1), g(" or "a=1)(b=2"
        raise ModelFileError(f"cannot read the arguments of '{ref}' (unbalanced parentheses); {how}")
    if call.args or any(k.arg is None for k in call.keywords):
        raise ModelFileError(f"'{ref}': give the factory's arguments by name (name=value), not by position")
    out: dict[str, Any] = {}
    for kw in call.keywords:
        try:
            out[kw.arg] = value = ast.literal_eval(kw.value)
            repr(value)  # canonical() names the model by it: an integer over 4300 digits has none
        except (ValueError, TypeError, MemoryError, RecursionError):  # TypeError: {[]: 1}, an unhashable key
            raise ModelFileError(f"'{ref}': the value of {kw.arg} is not a Python literal (numbers, strings, "
                                 "True/False/None, tuples, lists, dicts of those, hashable keys)") from None
    return out


def canonical(name: str, kwargs: dict[str, Any]) -> str:
    """``make`` + ``{"width": 0.75}`` → ``make(width=0.75)`` (sorted, so equal calls name one model)."""
    if not kwargs:
        return name
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(kwargs.items()))})"


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def import_file(path: Path) -> Any:
    """Import a user's model file as a module (its own folder importable while it runs)."""
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' does not exist; pass path/to/file.py:factory")
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"hybridexport_user_{path.stem}_{tag}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"'{path}' cannot be imported as Python")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        with _on_path(path.resolve().parent):
            spec.loader.exec_module(mod)
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything; one line says what
        sys.modules.pop(name, None)
        raise ModelFileError(f"importing {path} failed: {type(exc).__name__}: {_first_line(exc)}; fix the file") from exc
    return mod


def call_factory(ref: str) -> tuple[nn.Module, str]:
    """(module, canonical name) of ``file.py:factory(...)``."""
    from torch import nn

    m = _FACTORY.match(ref.strip())
    if m is None:
        raise ModelFileError(f"'{ref}' is not path/to/file.py:factory or file.py:factory(name=value, ...)")
    path, func = Path(m["path"]), m["func"]
    kwargs = parse_kwargs(m["args"] or "", ref)
    mod = import_file(path)
    factory = getattr(mod, func, None)
    if not callable(factory):
        defined = sorted(n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == mod.__name__)
        raise ModelFileError(f"{path} has no function '{func}' (it defines: {', '.join(defined) or 'none'})")
    label = f"{path.name}:{canonical(func, kwargs)}"
    try:
        module = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything; one line says what
        raise ModelFileError(f"{label} raised {type(exc).__name__}: {_first_line(exc)}; fix the factory or its "
                             "arguments") from exc
    if not isinstance(module, nn.Module):
        raise ModelFileError(f"{label} returned a {type(module).__name__}, not a torch.nn.Module; return the model")
    return module, label


def timm_call(ref: str) -> tuple[str, dict[str, Any]] | None:
    """``timm:<name>(kw=...)`` → (``timm:<name>``, kwargs); None for a plain name."""
    m = _TIMM_CALL.match(ref.strip())
    return (f"timm:{m['name']}", parse_kwargs(m["args"], ref)) if m else None


# ----------------------------------------------------------------------------- .pt2 without unpickling


class _Refused(Exception):
    pass


@contextlib.contextmanager
def _tensors_only() -> Iterator[None]:
    """While it is active, ``torch.load`` unpickles tensors only (``weights_only=True``, whatever the caller
    asks) and every other unpickler refuses: ``torch.export.load`` falls back to full unpickling when safe
    loading fails (``torch/_export/serde/serialize.py``) and loads ``use_pickle`` weights, custom and opaque
    objects with full unpicklers (``torch/export/pt2_archive/_package.py``)."""
    import pickle

    import torch

    real_load = torch.load

    def safe_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except pickle.UnpicklingError as exc:
            raise _Refused(_first_line(exc)) from None

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise _Refused("it holds a pickled Python object")

    patches = [(torch, "load", safe_load), (pickle, "loads", refuse), (pickle, "load", refuse),
               (torch._C, "_pickle_load_obj", refuse)]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, new in patches:
            setattr(obj, attr, new)
        yield
    finally:
        for obj, attr, old in saved:
            setattr(obj, attr, old)


def load_pt2(path: str | Path) -> torch.export.ExportedProgram:
    """A ``torch.export.save``d program, loaded so that nothing but tensors is ever unpickled; a file that
    carries a pickled object is refused with one line."""
    import zipfile

    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"saved program '{p}' does not exist")
    if not zipfile.is_zipfile(p):
        raise ModelFileError(f"'{p}' is not a .pt2 archive (torch.export.save writes a zip file); re-save it")
    try:
        with _tensors_only():
            ep = torch.export.load(str(p))
    except _Refused as why:
        raise ModelFileError(f"refused to load '{p}': {why} (only tensors are loaded from a .pt2, never pickled "
                             "code); re-save it with torch.export.save from plain tensors") from None
    except HybridExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise ModelFileError(f"'{p}' is not a loadable ExportedProgram ({type(exc).__name__}: {_first_line(exc)}); "
                             "re-save it with torch.export.save") from None
    return ep


# ----------------------------------------------------------------------------- the one entry point


def load_model(
    ref: str | Path | nn.Module | LoadedModel | Any,
    *,
    checkpoint: str | Path | None = None,
    resolution: int | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    example_inputs: Sequence[torch.Tensor] | None = None,
    name: str | None = None,
    strict: bool = True,
    seed: int = 0,
) -> LoadedModel:
    """The model ``ref`` names (see the module docstring), in eval mode, with its input shapes."""
    import torch
    from torch import nn

    from hybridexport.zoo import LoadedModel, ModelSpec, build_model

    check_reference(ref, resolution, input_shapes)
    shapes = [tuple(int(d) for d in s) for s in input_shapes] if input_shapes else None
    if isinstance(ref, LoadedModel):
        return ref if not shapes else _with_shapes(ref, shapes)
    if isinstance(ref, torch.export.ExportedProgram):
        return _from_program(ref, name or "exported-program", shapes, checkpoint, strict)
    if isinstance(ref, nn.Module):
        if example_inputs is None and not shapes:
            raise ModelFileError("a module needs its inputs: pass example_inputs=(x, ...) or input_shapes=[...]")
        given = tuple(example_inputs) if example_inputs is not None else None
        shapes = shapes or [tuple(x.shape) for x in given]  # type: ignore[union-attr]
        spec = ModelSpec(name=name or type(ref).__name__, family="user", variant=type(ref).__name__,
                         resolution=_square(shapes), source=f"python:{type(ref).__module__}.{type(ref).__qualname__}")
        return _finish(LoadedModel(spec=spec, module=ref.eval(), resolution=_square(shapes), input_shapes=shapes,
                                   examples=given), checkpoint, strict)
    text = str(ref).strip()
    if text.endswith(".pt2"):
        return _from_program(load_pt2(text), name or Path(text).name, shapes, checkpoint, strict,
                             source=f"pt2:{Path(text).resolve()}")
    if _FACTORY.match(text):
        torch.manual_seed(seed)
        module, label = call_factory(text)
        r = resolution or DEFAULT_RESOLUTION
        shapes = shapes or [(1, 3, r, r)]
        spec = ModelSpec(name=name or label, family="user", variant=label, resolution=_square(shapes),
                         source=f"file:{Path(text.split(':', 1)[0]).resolve()}")
        return _finish(LoadedModel(spec=spec, module=module.eval(), resolution=_square(shapes), input_shapes=shapes),
                       checkpoint, strict)
    loaded = build_model(text, checkpoint=checkpoint, resolution=resolution, strict=strict, seed=seed)
    return _with_shapes(loaded, shapes) if shapes else loaded


def check_reference(ref: Any, resolution: int | None = None,
                    input_shapes: Sequence[Sequence[int]] | None = None) -> None:
    """Fail, with one line, on what can be told wrong before anything is built or imported: unknown zoo
    names, a missing model file or program, an artifact where a model is needed, ``--resolution`` together
    with ``--input-shape``."""
    from hybridexport.export.formats import BadOptionError

    if resolution is not None and input_shapes:
        raise BadOptionError("--resolution and --input-shape both set the input; pass one (--input-shape "
                             "1x3xHxW also gives a square one)")
    if not isinstance(ref, (str, Path)):
        return
    text = str(ref).strip()
    m = _FACTORY.match(text)
    if m is not None:
        if not Path(m["path"]).is_file():
            raise ModelFileError(f"model file '{m['path']}' does not exist; pass path/to/file.py:factory")
        parse_kwargs(m["args"] or "", text)
        return
    if text.endswith(".pt2"):
        if not Path(text).is_file():
            raise ModelFileError(f"saved program '{text}' does not exist")
        return
    if text.endswith((".py", ".py:")):
        raise ModelFileError(f"'{text}' names a file but no factory; pass {text.rstrip(':')}:FACTORY "
                             "(the function that returns the nn.Module)")
    if ".py:" in text:
        raise ModelFileError(f"'{text}' is not file.py:factory or file.py:factory(name=value, ...); check the "
                             "factory name and the brackets")
    if text.endswith((".onnx", ".tflite", ".mlpackage", ".pte")):
        raise UnknownModelError(f"'{text}' is an exported artifact, not a model: `bench` and `info` take it as it "
                                "is; `convert` and `rewrite` need the model it was made from")
    suffix = Path(text).suffix.lower()
    if suffix and ("/" in text or Path(text).exists()) and not text.lower().startswith("timm:"):
        raise ModelFileError(f"'{text}': a {suffix} file is not a model hybridexport reads; pass a zoo name, "
                             "file.py:factory, a .pt2 (torch.export.save), or an artifact (.onnx, .tflite, "
                             ".mlpackage, .pte) to `bench`/`info`")
    from hybridexport.zoo.registry import resolve

    resolve(text)


def model_identity(ref: str, resolution: int | None, input_shapes: Sequence[Sequence[int]] | None) -> tuple[str, list[list[int]]] | None:
    """(name, input shapes) a string reference will have, without building it (None when only loading tells:
    a ``.pt2`` without ``--input-shape``)."""
    text = ref.strip()
    shapes = [list(s) for s in input_shapes] if input_shapes else None
    if _FACTORY.match(text):
        m = _FACTORY.match(text)
        label = f"{Path(m['path']).name}:{canonical(m['func'], parse_kwargs(m['args'] or '', text))}"
        r = resolution or DEFAULT_RESOLUTION
        return label, shapes or [[1, 3, r, r]]
    if text.endswith(".pt2"):
        return (Path(text).name, shapes) if shapes else None
    from hybridexport.zoo.registry import resolve

    spec = resolve(text)
    r = int(resolution or spec.resolution)
    return spec.name, shapes or [[1, 3, r, r]]


def _square(shapes: Sequence[Sequence[int]]) -> int:
    """R when the inputs are one (1, 3, R, R) image, else 0."""
    if len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][2] == shapes[0][3]:
        return int(shapes[0][2])
    return 0


def _with_shapes(loaded: LoadedModel, shapes: list[tuple[int, ...]]) -> LoadedModel:
    from dataclasses import replace

    return replace(loaded, input_shapes=shapes, resolution=_square(shapes) or loaded.resolution, examples=None)


def _from_program(ep: Any, name: str, shapes: list[tuple[int, ...]] | None, checkpoint: str | Path | None,
                  strict: bool, source: str = "python:ExportedProgram") -> LoadedModel:
    import torch

    from hybridexport.zoo import LoadedModel, ModelSpec

    args, _kwargs = ep.example_inputs or ((), {})
    given = tuple(a for a in args if isinstance(a, torch.Tensor))
    shapes = shapes or [tuple(x.shape) for x in given]
    if not shapes:
        raise ModelFileError(f"'{name}' carries no example inputs; pass --input-shape (one per input)")
    spec = ModelSpec(name=name, family="user", variant=name, resolution=_square(shapes), source=source)
    module = _module_of(ep)
    return _finish(LoadedModel(spec=spec, module=module, resolution=_square(shapes), input_shapes=shapes,
                               examples=given if [tuple(x.shape) for x in given] == shapes else None), checkpoint, strict)


def _module_of(ep: Any) -> nn.Module:
    """The program as a module with the original submodule names (``torch.export.unflatten``), so per-layer
    rows map to ``stem.0``-style paths in every format; a program unflatten cannot take runs flat."""
    import torch

    try:
        return torch.export.unflatten(ep)
    except Exception:  # noqa: BLE001 - unflatten is best effort; the flat module computes the same
        return ep.module()


def _finish(loaded: LoadedModel, checkpoint: str | Path | None, strict: bool) -> LoadedModel:
    if checkpoint is None:
        return loaded
    from dataclasses import replace

    from hybridexport.zoo.checkpoint import load_into

    report = load_into(loaded.module, checkpoint, strict=strict)
    loaded.module.eval()
    return replace(loaded, checkpoint=str(checkpoint), load_report=report)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
