"""Judges: does a verified rewrite pay on the target device?

A pass that verifies is kept unless the target's latency gets worse beyond noise:

* **predicted** (the default, every device with a calibrated latency model, the host included): the
  model before and after the pass is converted to the target format and its op table priced by the
  device's latency model. The model is deterministic, so *worse* means a predicted total more than
  :data:`PREDICTED_TOLERANCE` above the one before, and the same inputs always give the same artifact.
  The host's model prices as stored, not rescaled by this boot's speed probe (``bench -r predicted``
  rescales): an artifact never depends on a probe's noise, and the cache key (the stored model) is
  all its decisions depend on.
* **measured** (``--judge measured``, the host only, ONNX Runtime, one thread): both models are exported
  to ONNX and run alternately, :data:`MEASURED_RUNS` times each. *Worse* means the p20 and the median
  ratio are both beyond :data:`MEASURED_TOLERANCE` with the whole 99 % bootstrap interval above 1 (the
  rule of ``hybridexport compare``). Not the default: a pass near the threshold is kept or skipped by
  the machine's noise (mobileformer-26m split-heads measured ×1.05 with an interval spanning 1), so the
  artifact would depend on the run, and it costs 15-35 s per pass on a 2-core machine.

The deploy form (:data:`UNJUDGED`: reparameterize, fuse-bn) is not judged: published latencies are
timed on it, so predictions are compared like with like only on top of it. A model's estimate and its
artifact are kept while it is the current model, so each judged pass costs one more conversion, and
``convert`` takes the final model's artifact from the judge (:meth:`Judge.artifact_of`) instead of
converting it again.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.errors import HybridExportError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hybridexport.export.options import ExportOptions

UNJUDGED = frozenset({"reparameterize", "fuse-bn"})
PREDICTED_TOLERANCE = 0.005
MEASURED_TOLERANCE = 0.03
MEASURED_RUNS = 30


@dataclass
class Verdict:
    """Latency of the model before and after one pass on the judge's target, and whether it got worse."""

    before_ms: float
    after_ms: float
    how: str
    slower: bool
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.after_ms / self.before_ms if self.before_ms > 0 else float("inf")

    def reason(self) -> str:
        return (f"skipped: {self.how} slower after it, {self.before_ms:.3f} → {self.after_ms:.3f} ms "
                f"({(self.ratio - 1) * 100:+.1f}%)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


class Judge(ABC):
    """Compares a model before and after a pass on one target (device × format)."""

    device: str
    fmt: str

    def __init__(self, opts: ExportOptions | None = None) -> None:
        from hybridexport.export.options import ExportOptions, resolve_precision

        self.opts = opts or ExportOptions(precision=resolve_precision(self.fmt, None))
        self._tmp = tempfile.TemporaryDirectory(prefix="hx-judge-")
        self._artifacts: dict[int, tuple[nn.Module, Path, Any]] = {}

    def convert(self, module: nn.Module, examples: tuple[torch.Tensor, ...], fmt: str | None = None) -> tuple[Path, Any]:
        """``module``'s artifact in ``fmt`` (default: the judge's) with the judge's options, made once."""
        from hybridexport.export import formats
        from hybridexport.export.options import resolve_precision
        from hybridexport.export.quiet import converter_output

        fmt = fmt or self.fmt
        hit = self._hit(module, fmt)
        if hit is not None:
            return hit
        f = formats.get(fmt)
        opts = self.opts if fmt == self.fmt else dataclasses.replace(self.opts, precision=resolve_precision(fmt, None))
        folder = Path(self._tmp.name) / str(len(self._artifacts))
        folder.mkdir()
        path = folder / f"candidate{f.suffix}"
        import torch

        with converter_output(False, f"judging on {fmt}"), torch.no_grad():
            built = f.convert(module, examples, path, opts)
        self._artifacts[id(module)] = (module, path, built)
        return path, built

    def artifact_of(self, module: nn.Module) -> tuple[Path, Any] | None:
        """The artifact (path, Built) the judge made of ``module`` in its format with its options, if any."""
        return self._hit(module, self.fmt)

    def _hit(self, module: nn.Module, fmt: str) -> tuple[Path, Any] | None:
        """The artifact already made of this very module (not a later one at a reused id) in ``fmt``."""
        from hybridexport.export import formats

        hit = self._artifacts.get(id(module))
        if hit is None or hit[0] is not module or not hit[1].name.endswith(formats.get(fmt).suffix):
            return None
        return hit[1], hit[2]

    @property
    @abstractmethod
    def how(self) -> str:
        """One phrase: how latency is obtained ("predicted on iphone13 (coreml)")."""

    @abstractmethod
    def judge(self, before: nn.Module, after: nn.Module, examples: tuple[torch.Tensor, ...]) -> Verdict:
        """The verdict for replacing ``before`` by ``after``."""


class PredictedJudge(Judge):
    """Prices the converted graph with the device's latency model (see the module docstring)."""

    def __init__(self, device: str, fmt: str, opts: ExportOptions | None = None) -> None:
        from hybridexport.bench.devices import load_device
        from hybridexport.latency.predictor import latency_model_of

        self.device, self.fmt = device, fmt
        self.latency_model = latency_model_of(device, load_device(device).raw)
        self._known: dict[int, tuple[nn.Module, float]] = {}
        super().__init__(opts)

    @property
    def how(self) -> str:
        return f"predicted on {self.device} ({self.fmt} latency model)"

    def estimate(self, module: nn.Module, examples: tuple[torch.Tensor, ...]) -> float:
        hit = self._known.get(id(module))
        if hit is not None and hit[0] is module:
            return hit[1]
        from hybridexport.latency.predictor import predict_ops

        _, built = self.convert(module, examples)
        ms = predict_ops(built.table.ops, self.latency_model, self.device).total_ms
        self._known[id(module)] = (module, ms)
        return ms

    def judge(self, before: nn.Module, after: nn.Module, examples: tuple[torch.Tensor, ...]) -> Verdict:
        t0 = time.perf_counter()
        b, a = self.estimate(before, examples), self.estimate(after, examples)
        return Verdict(round(b, 4), round(a, 4), self.how, a > b * (1 + PREDICTED_TOLERANCE),
                       round(time.perf_counter() - t0, 3))


class MeasuredHostJudge(Judge):
    """Times both models with ONNX Runtime here, alternately (see the module docstring)."""

    def __init__(self, fmt: str, runs: int = MEASURED_RUNS, opts: ExportOptions | None = None) -> None:
        self.device, self.fmt, self.runs = "host", fmt, runs
        self._sessions: dict[int, tuple[nn.Module, Any, dict[str, Any]]] = {}
        super().__init__(opts)

    @property
    def how(self) -> str:
        return "measured on host (ONNX Runtime, 1 thread)" + (f", standing in for {self.fmt}" if self.fmt != "onnx" else "")

    def _session(self, module: nn.Module, examples: tuple[torch.Tensor, ...]) -> tuple[Any, dict[str, Any]]:
        hit = self._sessions.get(id(module))
        if hit is not None and hit[0] is module:
            return hit[1], hit[2]
        import onnxruntime as ort

        path, _ = self.convert(module, examples, "onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = {i.name: x.detach().numpy() for i, x in zip(sess.get_inputs(), examples, strict=True)}
        self._sessions[id(module)] = (module, sess, feeds)
        return sess, feeds

    def judge(self, before: nn.Module, after: nn.Module, examples: tuple[torch.Tensor, ...]) -> Verdict:
        from hybridexport.report import stats

        t0 = time.perf_counter()
        pair = [self._session(before, examples), self._session(after, examples)]
        for sess, feeds in pair:  # warm-up
            for _ in range(3):
                sess.run(None, feeds)
        samples: list[list[float]] = [[], []]
        for _ in range(self.runs):
            for k, (sess, feeds) in enumerate(pair):
                s = time.perf_counter()
                sess.run(None, feeds)
                samples[k].append((time.perf_counter() - s) * 1000.0)
        ests = [stats.ratio_of_quantiles(samples[0], samples[1], q=q) for q in (0.2, 0.5)]
        slower = all(stats.classify(e.ratio, MEASURED_TOLERANCE, e.lo, e.hi) == "regression" for e in ests)
        return Verdict(round(stats.quantile(samples[0], 0.5), 4), round(stats.quantile(samples[1], 0.5), 4),
                       self.how, slower, round(time.perf_counter() - t0, 3))


JUDGES = ("predicted", "measured")
PRICED_FORMATS = ("coreml", "tflite", "onnx")  # graphs the latency models price


def target_device(fmt: str, device: str | None = None) -> str:
    """The device a ``fmt`` artifact is judged for: ``device`` when given, else the format's own
    (iphone13 for Core ML, pixel8 for TFLite, host for ONNX and ExecuTorch)."""
    from hybridexport.export import formats

    return device or formats.get(fmt).default_device


def check_judge(how: str, fmt: str, device: str | None = None) -> None:
    """Refuse a judge that cannot run for this format and device (one line, before any work)."""
    from hybridexport.bench.devices import load_device

    if how not in JUDGES:
        raise JudgeError(f"unknown judge '{how}'; use one of: {', '.join(JUDGES)} (or none)")
    name = target_device(fmt, device)
    if how == "measured" and load_device(name).kind != "host":
        raise JudgeError(f"--judge measured times passes here, and '{name}' is not this machine; "
                         "use --judge predicted for a phone")


def judge_for(fmt: str, device: str | None = None, opts: ExportOptions | None = None,
              how: str = "predicted") -> tuple[Judge | None, str]:
    """The judge of a ``fmt`` artifact for ``device`` (default: the format's device), or (None, why not).

    ``opts`` are the artifact's options, so the judge converts exactly what ``convert`` would."""
    check_judge(how, fmt, device)
    name = target_device(fmt, device)
    if how == "measured":
        if fmt != "onnx":
            return None, f"not judged: measured judging times ONNX artifacts, not {fmt}"
        return MeasuredHostJudge(fmt, opts=opts), ""
    if fmt not in PRICED_FORMATS:
        return None, f"not judged: no latency model prices {fmt} graphs"
    try:
        return PredictedJudge(name, fmt, opts), ""
    except HybridExportError as exc:
        return None, f"not judged: {exc}"


class JudgeError(HybridExportError):
    """A judge that cannot run for the requested format and device."""
