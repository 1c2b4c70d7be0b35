"""The Python API: every stage takes what the CLI takes, and a plain ``nn.Module`` with its example inputs.

    import hybridexport
    hybridexport.info(net, example_inputs=(x,), name="my-variant")            # ModelAnalysis
    module, report = hybridexport.rewrite(net, example_inputs=(x,), target="coreml")
    [man] = hybridexport.convert(net, example_inputs=(x,), name="my-variant", to="coreml")
    [profile] = hybridexport.bench(net, example_inputs=(x,), name="my-variant", device="iphone13")

``model`` is anything :func:`hybridexport.zoo.refs.load_model` takes (zoo and ``timm:`` names,
``file.py:factory(...)``, a ``.pt2``, an ``nn.Module``); ``info`` and ``bench`` also take an artifact's path.
The ``hybridexport.bench`` and ``hybridexport.rewrite`` packages are callable as these functions.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.analyze.artifact import ArtifactInfo
    from hybridexport.analyze.model import ModelAnalysis
    from hybridexport.bench.profile import Profile
    from hybridexport.export.manifest import Manifest
    from hybridexport.rewrite.report import RewriteReport


def _model(model: Any, example_inputs: Sequence[torch.Tensor] | None, input_shapes: Sequence[Sequence[int]] | None,
           name: str | None, resolution: int | None, checkpoint: str | Path | None, strict: bool = True) -> Any:
    from hybridexport.zoo.refs import load_model

    return load_model(model, example_inputs=example_inputs, input_shapes=input_shapes, name=name,
                      resolution=resolution, checkpoint=checkpoint, strict=strict)


def info(model: Any, *, example_inputs: Sequence[torch.Tensor] | None = None,
         input_shapes: Sequence[Sequence[int]] | None = None, name: str | None = None,
         resolution: int | None = None, checkpoint: str | Path | None = None) -> ModelAnalysis | ArtifactInfo:
    """What ``hybridexport info`` shows: a model's analysis, or what an artifact file holds."""
    from hybridexport.bench import is_artifact_path

    if is_artifact_path(model):
        from hybridexport.analyze.artifact import artifact_info

        return artifact_info(model)
    from hybridexport.analyze.model import analyze

    return analyze(_model(model, example_inputs, input_shapes, name, resolution, checkpoint))


def rewrite(model: Any, *, example_inputs: Sequence[torch.Tensor] | None = None,
            input_shapes: Sequence[Sequence[int]] | None = None, name: str | None = None,
            passes: Sequence[str] | str | None = None, target: str | None = None, resolution: int | None = None,
            checkpoint: str | Path | None = None) -> tuple[nn.Module, RewriteReport]:
    """The verified rewrite passes on ``model`` (the target's pipeline unless ``passes`` are named)."""
    from hybridexport.rewrite.pipeline import resolve_passes, run_pipeline

    names = resolve_passes(passes, target)  # unknown names fail before anything is built
    loaded = _model(model, example_inputs, input_shapes, name, resolution, checkpoint)
    return run_pipeline(loaded.module, loaded.example_inputs(), passes=names, target=target)


def convert(model: Any, **kwargs: Any) -> list[Manifest]:
    """:func:`hybridexport.export.convert`."""
    from hybridexport.export import convert as _convert

    return _convert(model, **kwargs)


def bench(model: Any = None, *, example_inputs: Sequence[torch.Tensor] | None = None, name: str | None = None,
          **kwargs: Any) -> list[Profile]:
    """:func:`hybridexport.bench.bench`; an ``nn.Module`` comes with ``example_inputs`` (or ``input_shapes``)
    and a ``name``."""
    from torch import nn

    from hybridexport.bench import bench as _bench

    if isinstance(model, nn.Module):
        model = _model(model, example_inputs, kwargs.pop("input_shapes", None), name, None, None)
    return _bench(model, **kwargs)


class _CallableModule(types.ModuleType):
    """A stage package that is also its stage's function (``hybridexport.bench(...)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(sys.modules[__name__], self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Let ``hybridexport.<stage>`` be called like the API function of the same name."""
    sys.modules[module_name].__class__ = _CallableModule
