"""Runners: each turns an artifact (or a model) into a Profile on one kind of device.

Contract shared by every runner (host, Android, iOS, predicted):

* ``name``: registry key, e.g. ``host-onnxruntime``, ``android-adb``, ``ios-coreml``, ``mac-coreml``, ``predicted``.
* ``formats``: artifact formats it can run (``formats_for(device)``: those it takes for one device).
* ``availability(device)`` → ``(ok, reason)``: can it serve ``device`` on this machine right now,
  and if not, why (one line a user can act on).
* ``run(request)`` → ``Profile``.
* ``configure(options)`` (optional): runner options from the command line (``--serial``,
  ``--benchmark-binary``, ...) that ``availability`` may need; the same dict arrives as
  ``BenchRequest.options``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.errors import RunnerUnavailableError

if TYPE_CHECKING:
    from hybridexport.bench.devices import DeviceProfile
    from hybridexport.bench.profile import Profile
    from hybridexport.export.manifest import Manifest
    from hybridexport.optable import OpTable
    from hybridexport.zoo import LoadedModel


@dataclass
class BenchRequest:
    """What to benchmark and how: an artifact (with its manifest when ``convert`` made it), or a model."""

    device: DeviceProfile
    manifest: Manifest | None = None  # the exported artifact's manifest
    model: LoadedModel | None = None  # the source model (the PyTorch eager runner)
    runs: int = 50
    warmup: int = 10
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    artifact: Path | None = None  # an artifact made elsewhere (no manifest)
    _table: OpTable | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The model name (``convert``'s) or, for an artifact made elsewhere, its file name."""
        if self.manifest is not None:
            return self.manifest.model
        if self.model is not None:
            return self.model.name
        return self.artifact.name if self.artifact is not None else ""

    def artifact_path(self) -> Path | None:
        if self.manifest is not None:
            return Path(self.manifest.path)
        return self.artifact

    def artifact_format(self) -> str | None:
        if self.manifest is not None:
            return self.manifest.format
        if self.artifact is not None:
            from hybridexport.export.formats import for_path

            return for_path(self.artifact).name
        return None

    def op_table(self) -> OpTable | None:
        """The artifact's op table: the one ``convert`` wrote beside it, else read from the file itself (which
        carries module paths for ONNX and TFLite, not for Core ML)."""
        if self._table is None:
            from hybridexport.optable import OpTable

            side = self.manifest.op_table_path() if self.manifest is not None else None
            if side is not None and side.exists():
                self._table = OpTable.load(side)
                sha = self._table.artifact_sha256
                if sha and self.manifest.sha256 and sha != self.manifest.sha256:
                    from hybridexport.errors import InputFileError

                    raise InputFileError(f"op table {side} describes another build of {Path(self.manifest.path).name} "
                                         f"(its sha256 differs from the manifest's); rebuild it with `hybridexport "
                                         f"convert {self.manifest.model} --to {self.manifest.format} --force`")
            elif self.artifact_path() is not None:
                from hybridexport.export.formats import for_path

                self._table = for_path(self.artifact_path()).op_table(self.artifact_path())
        return self._table


class Runner(ABC):
    name: str = ""
    formats: tuple[str, ...] = ()
    obtained: str = "measured"
    _options: dict[str, Any] | None = None

    @property
    def options(self) -> dict[str, Any]:
        return self._options if self._options is not None else {}

    def configure(self, options: dict[str, Any] | None) -> Runner:
        """Remember runner options (device serial, tool paths); returns self."""
        self._options = dict(options or {})
        return self

    def formats_for(self, device: DeviceProfile) -> tuple[str, ...]:
        """The formats this runner takes for ``device`` (default: all of ``formats``)."""
        return self.formats

    @abstractmethod
    def availability(self, device: DeviceProfile) -> tuple[bool, str]:
        """(True, "") when it can serve ``device`` here now, else (False, why not)."""

    @abstractmethod
    def run(self, request: BenchRequest) -> Profile:
        """Benchmark and return a Profile (raise a HybridExportError subclass on user-facing failures)."""

    def require(self, device: DeviceProfile) -> None:
        ok, why = self.availability(device)
        if not ok:
            raise RunnerUnavailableError(f"runner '{self.name}' cannot serve device '{device.name}': {why}")


# name → "module:Class"; modules are imported lazily so a missing optional runtime does not break others.
RUNNERS: dict[str, str] = {
    "host-onnxruntime": "hybridexport.bench.runners.host_onnxruntime:OnnxRuntimeRunner",
    "host-executorch": "hybridexport.bench.runners.host_executorch:ExecuTorchRunner",
    "host-litert": "hybridexport.bench.runners.host_litert:LiteRTRunner",
    "host-pytorch": "hybridexport.bench.runners.host_pytorch:PyTorchEagerRunner",
    "android-adb": "hybridexport.bench.runners.android_adb:AndroidAdbRunner",
    "ios-coreml": "hybridexport.bench.runners.apple_coreml:IOSCoreMLRunner",
    "mac-coreml": "hybridexport.bench.runners.apple_coreml:MacCoreMLRunner",
    "qai-hub": "hybridexport.bench.runners.qai_hub:QaiHubRunner",
    "predicted": "hybridexport.bench.runners.predicted:PredictedRunner",
}


def get_runner(name: str) -> Runner:
    """Instantiate a runner by registry name; unknown names list the known ones."""
    if name not in RUNNERS:
        raise RunnerUnavailableError(f"unknown runner '{name}'; known runners: {', '.join(RUNNERS)}")
    modname, clsname = RUNNERS[name].split(":")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:  # an optional third-party client the runner needs
        if (exc.name or "").startswith("hybridexport"):
            raise
        raise RunnerUnavailableError(f"runner '{name}' needs {exc.name}, which is not installed (pip install "
                                     f"{exc.name})") from None
    return getattr(mod, clsname)()
