"""The model zoo: resolve a name, build the module, load a local checkpoint safely."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hybridexport.errors import CheckpointError, UnknownModelError
from hybridexport.zoo.registry import ModelSpec, family_aliases, list_specs, resolve

if TYPE_CHECKING:  # torch is imported lazily so `hybridexport --help` stays fast
    import torch
    from torch import nn

__all__ = ["LoadedModel", "ModelSpec", "build_model", "family_aliases", "list_specs", "resolve"]


@dataclass
class LoadedModel:
    """A built model in eval mode with what later stages need to know about it."""

    spec: ModelSpec
    module: nn.Module
    resolution: int  # the square image size (0 when the inputs are not one square image)
    checkpoint: str | None = None
    load_report: dict[str, list[str]] = field(default_factory=dict)
    #: one shape per forward() argument; default: one (1, 3, resolution, resolution) image
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    #: example inputs the user gave (the tracing example); None: seeded random ones
    examples: tuple[torch.Tensor, ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.input_shapes:
            self.input_shapes = [(1, 3, self.resolution, self.resolution)]
        self.input_shapes = [tuple(int(d) for d in s) for s in self.input_shapes]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's shape."""
        return self.input_shapes[0]

    def example_inputs(self, seed: int = 0, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        """Fixed random inputs (standard normal, seeded: identical on every run), float32 unless ``dtype``."""
        import torch

        if self.examples is not None and seed == 0:
            xs = tuple(self.examples)
        else:
            g = torch.Generator().manual_seed(seed)
            xs = tuple(torch.randn(*s, generator=g) for s in self.input_shapes)
        return xs if dtype is None else tuple(x.to(dtype) for x in xs)

    def example_input(self, seed: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The first of :meth:`example_inputs`."""
        return self.example_inputs(seed, dtype)[0]

    def weights_sha256(self) -> str:
        """Hash of every parameter and buffer: identifies the weights for artifact caching."""
        import torch

        h = hashlib.sha256()
        for k, v in sorted(self.module.state_dict().items()):
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16 else v.float().numpy().tobytes())
        return h.hexdigest()


def _build_module(spec: ModelSpec, resolution: int | None = None) -> nn.Module:
    if spec.family == "mobileformer":
        from hybridexport.zoo.mobileformer import create_mobileformer

        return create_mobileformer(spec.name)
    import hybridexport._tvshim  # noqa: F401

    import timm

    assert spec.timm_name is not None
    kwargs = dict(spec.kwargs)
    if resolution and resolution != spec.resolution and getattr(timm.get_pretrained_cfg(spec.timm_name),
                                                                "fixed_input_size", False):
        # sized for its input (attention biases, position embeddings): build it for the one asked for
        try:
            return timm.create_model(spec.timm_name, pretrained=False, img_size=resolution, **kwargs)
        except TypeError:  # a definition that takes no img_size: the run then says the size does not fit
            pass
    try:
        return timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    except TypeError as exc:
        if not kwargs:
            raise
        from hybridexport.zoo.refs import canonical

        raise UnknownModelError(f"timm:{spec.timm_name} does not take {canonical('', kwargs).strip('()')} "
                                f"({str(exc).splitlines()[0][:160]}); pass the keyword arguments its definition "
                                "accepts") from None


def build_model(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    resolution: int | None = None,
    strict: bool = True,
    pretrained: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """Build ``name`` in eval mode; load ``checkpoint`` if given. Random init is seeded (deterministic)."""
    import torch

    spec = resolve(name)
    if pretrained and checkpoint is None:
        raise CheckpointError(
            f"no model hub is reachable, so pretrained weights for {spec.name} must come from a local file: "
            "pass --checkpoint PATH (.pth/.pt/.safetensors)"
        )
    torch.manual_seed(seed)
    module = _build_module(spec, resolution).eval()
    report: dict[str, list[str]] = {}
    if checkpoint is not None:
        from hybridexport.zoo.checkpoint import load_into

        rename = None
        if spec.family == "mobileformer":
            from hybridexport.zoo.mobileformer import rename_official_keys as rename
        report = load_into(module, checkpoint, rename=rename, strict=strict)
        module.eval()
        skipped = len(report["missing"]) + len(report["unexpected"])
        if skipped:
            from hybridexport.console import err_console

            err_console.print(f"note: loaded {len(report['loaded'])} of the model's keys from {checkpoint}; "
                              f"{len(report['missing'])} missing, {len(report['unexpected'])} unexpected keys "
                              "skipped (--allow-mismatch)", highlight=False, soft_wrap=True)
        if report.get("resized"):
            from hybridexport.console import err_console

            err_console.print(f"note: {len(report['resized'])} attention-bias tables of the checkpoint were "
                              f"interpolated (bicubic) to the {resolution}×{resolution} input, e.g. "
                              f"{report['resized'][0]}", highlight=False, soft_wrap=True)
    return LoadedModel(
        spec=spec,
        module=module,
        resolution=int(resolution or spec.resolution),
        checkpoint=str(checkpoint) if checkpoint else None,
        load_report=report,
    )
