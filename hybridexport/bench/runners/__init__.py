"""Runners: each turns an artifact (or a model) into a Profile on one kind of device.

Contract shared by every runner (host, Android, iOS, predicted):

* ``name``: registry key, e.g. ``host-onnxruntime``, ``android-adb``, ``ios-coreml``, ``mac-coreml``, ``predicted``.
* ``formats``: artifact formats it can run.
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
    """What to benchmark and how."""

    device: DeviceProfile
    manifest: Manifest | None = None  # the exported artifact (None for the PyTorch eager runner)
    model: LoadedModel | None = None  # the source model, when available (module-path mapping, eager)
    runs: int = 50
    warmup: int = 10
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def op_table(self) -> OpTable | None:
        """The artifact's op table (written by ``convert`` beside it), or None when it has none."""
        if self.manifest is None:
            return None
        from hybridexport.optable import OpTable, op_table_path

        path = op_table_path(self.manifest.path)
        return OpTable.load(path) if path.exists() else None


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
    "predicted": "hybridexport.predict.runner:PredictedRunner",
}


def get_runner(name: str) -> Runner:
    """Instantiate a runner by registry name; unknown names list the known ones."""
    if name not in RUNNERS:
        raise RunnerUnavailableError(f"unknown runner '{name}'; known runners: {', '.join(RUNNERS)}")
    modname, clsname = RUNNERS[name].split(":")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        raise RunnerUnavailableError(f"runner '{name}' is not available in this installation ({exc})") from None
    return getattr(mod, clsname)()
