"""What a format is: one object that owns every fact about one artifact format.

A format module (``hybridexport.export.formats.<name>``) defines one :class:`Format` subclass and an
instance ``FORMAT``. Everything else asks the format — its title, file suffix, default precision, the
device it targets by default, the options it takes, how to convert, save, run and read an artifact,
and the artifact's op table — instead of keeping tables of its own. Adding a format is adding one module
here (and its name to :data:`hybridexport.export.formats.NAMES`).

``convert(module, examples, path, opts)`` writes the artifact to ``path`` (a temporary path the caller
renames into place) and returns :class:`Built` with the artifact's op table; ``run(path, input_sets)``
returns the outputs for each input set or raises :class:`NotRunnableHere` with the reason;
``op_table(path, hints)`` reads the op table from the file itself (``hints`` carry what only the
conversion knew, such as Core ML's module scopes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions
    from hybridexport.optable import OpTable


class NotRunnableHere(Exception):
    """The format's runtime cannot run on this machine; the message says why (and what was checked instead)."""


@dataclass
class TableHints:
    """What the conversion knows about the graph that the saved file may not carry."""

    #: ``named_modules()`` paths of the converted module (fixes ambiguous names in litert-torch locations)
    known_modules: set[str] | None = None
    #: runtime op name → nn.Module path, found during conversion (Core ML: TorchScript scopes)
    op_modules: dict[str, str] | None = None


@dataclass
class Built:
    """What a format learned while building an artifact."""

    converter_seconds: float
    table: OpTable
    extra: dict[str, Any] = field(default_factory=dict)


class Format(ABC):
    """One artifact format. Subclasses set the class attributes and implement the three methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    suffix: ClassVar[str]
    default_precision: ClassVar[str] = "fp32"
    #: the device profile this format's artifacts run on unless ``--device`` says otherwise
    default_device: ClassVar[str] = "host"
    #: ExportOptions fields only this format takes (an error when no requested format takes them)
    own_options: ClassVar[tuple[str, ...]] = ()
    #: what runs the artifact for the parity check here (recorded as ``Parity.method``)
    runtime: ClassVar[str] = ""

    @abstractmethod
    def convert(self, module: nn.Module, examples: tuple[torch.Tensor, ...], path: Path,
                opts: ExportOptions) -> Built:
        """Write the artifact for ``module`` traced on ``examples`` to ``path``."""

    @abstractmethod
    def run(self, path: Path, input_sets: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """Outputs of the artifact for each input set (raise :class:`NotRunnableHere` when it cannot run here)."""

    @abstractmethod
    def op_table(self, path: Path, hints: TableHints | None = None) -> OpTable:
        """The op table of the artifact at ``path``."""

    def check(self, opts: ExportOptions) -> None:  # noqa: B027 - most formats accept every combination
        """Raise BadOptionError for option combinations this format cannot build."""

    def key_options(self, opts: ExportOptions) -> dict[str, Any]:
        """The options that change what is written (part of the artifact's cache key)."""
        return {"precision": opts.precision, "input_names": list(opts.input_names)}

    def reference_inputs(self, opts: ExportOptions, shapes: list[list[int]], n: int) -> list[list[torch.Tensor]] | None:
        """Verification inputs the format needs instead of the default random ones (None: the default)."""
        return None

    def method(self, opts: ExportOptions) -> str:
        """How the parity check runs the artifact here."""
        return self.runtime

    def mismatch_hint(self, opts: ExportOptions) -> str:
        """What to run on an artifact kept with ``--keep-mismatch`` to find where it diverges ("" for none)."""
        return ""

    def failure_hints(self, opts: ExportOptions) -> list[str]:
        """Options that may help when conversion fails (:func:`hybridexport.export.hints.honest_hints` drops
        the ones already in effect before a user sees them)."""
        return ["--no-rewrite", "--precision fp32"]

    def artifact_name(self, stem: str, precision: str) -> str:
        """``<stem>.<precision><suffix>``."""
        return f"{stem}.{precision}{self.suffix}"
