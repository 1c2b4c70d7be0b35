"""``predicted``: per-layer latency for a device that is not attached, from its calibrated cost model."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.errors import InputFileError, RunnerUnavailableError
from hybridexport.predict.predictor import Prediction, features_of_artifact, latency_model_of, predict_ops

if TYPE_CHECKING:
    from hybridexport.bench.devices import DeviceProfile
    from hybridexport.predict.features import OpFeature


def _raw(device: DeviceProfile) -> dict[str, Any] | None:
    raw = getattr(device, "raw", None)
    return raw if isinstance(raw, dict) and raw else None


class PredictedRunner(Runner):
    name = "predicted"
    formats = ("coreml", "tflite", "onnx")
    obtained = "predicted"

    def availability(self, device: DeviceProfile) -> tuple[bool, str]:
        try:
            latency_model_of(device.name, _raw(device))
        except (RunnerUnavailableError, InputFileError) as exc:
            return False, str(exc)
        return True, ""

    def run(self, request: BenchRequest) -> Profile:
        device = request.device
        lm = latency_model_of(device.name, _raw(device))
        fmt = lm["device"]["format"]
        t0 = time.perf_counter()
        ops, artifact, sha, resolution = self._features(request, fmt)
        t_feat = time.perf_counter() - t0
        notes: list[str] = []
        mapped = self._map_modules(request, ops, fmt, notes)
        t1 = time.perf_counter()
        pred = predict_ops(ops, lm, device.name)
        t_pred = time.perf_counter() - t1
        proto = getattr(device, "protocol", {}) or {}
        delegate = {"cpu": "cpu", "gpu": "gpu", "npu": "npu", "edgetpu": "npu", "nnapi": "npu"}.get(
            str(proto.get("delegate", "")).lower(), pred.spec.unit)
        if (proto.get("precision") and proto.get("precision") != pred.spec.precision) or delegate != pred.spec.unit:
            notes.append(f"the latency model was calibrated for {pred.spec.precision} on the {pred.spec.unit} (the only "
                         f"published protocol for this phone), not for this profile's {proto.get('precision')} "
                         f"{proto.get('compute_units', '')} protocol")
        model = request.manifest.model if request.manifest is not None else request.model.name  # type: ignore[union-attr]
        return build_profile(pred, lm, model=model, device=device.name, artifact=artifact, sha=sha, notes=notes,
                             timings={"features_s": round(t_feat, 3), "module_map_s": round(mapped, 3),
                                      "predict_s": round(t_pred, 4)}, resolution=resolution)

    def _features(self, request: BenchRequest, fmt: str) -> tuple[list[OpFeature], str, str, int]:
        m = request.manifest
        if m is not None:
            if m.format != fmt:
                raise RunnerUnavailableError(
                    f"the latency model of '{request.device.name}' predicts {fmt} artifacts, got a {m.format} "
                    f"artifact; run `hybridexport convert {m.model} --to {fmt}`"
                )
            return features_of_artifact(m.path, fmt), m.path, m.sha256, m.resolution
        if request.model is None:
            raise InputFileError("the predicted runner needs an exported artifact (manifest) or a model")
        from hybridexport.predict.build import export_features

        with tempfile.TemporaryDirectory() as tmp:
            ops = export_features(request.model.module, fmt, request.model.resolution, workdir=tmp)
        return ops, f"(exported in memory to {fmt})", "", request.model.resolution

    def _map_modules(self, request: BenchRequest, ops: list[OpFeature], fmt: str, notes: list[str]) -> float:
        """Fill nn.Module paths for Core ML ops (TFLite/ONNX carry them already); returns seconds spent."""
        t0 = time.perf_counter()
        if fmt == "coreml":
            if request.model is None and request.manifest is not None:
                from hybridexport.bench.runners._common import source_model

                try:  # rebuilt from the manifest (random weights: only the structure matters here)
                    source_model(request)
                except Exception as exc:  # noqa: BLE001 (mapping is best effort; the prediction stands)
                    notes.append(f"module paths unavailable: cannot rebuild {request.manifest.model} ({exc})")
            if request.model is not None:
                self._map_coreml(request, ops, notes)
        unmapped = sum(1 for o in ops if not o.module)
        if unmapped:
            notes.append(f"{unmapped} of {len(ops)} ops could not be mapped to an nn.Module path")
        return time.perf_counter() - t0

    @staticmethod
    def _map_coreml(request: BenchRequest, ops: list[OpFeature], notes: list[str]) -> None:
        from hybridexport.predict.modpath import assign_modules, fx_module_map, trace_module_map

        assert request.model is not None
        module, example = request.model.module, request.model.example_input()
        passes = list(request.manifest.passes) if request.manifest is not None else []
        if passes:  # names come from the rewritten module the artifact was traced from
            try:
                from hybridexport.rewrite.pipeline import run_pipeline

                module, _ = run_pipeline(module, example, passes=passes, count=False)
            except Exception as exc:  # noqa: BLE001 (mapping is best effort; the prediction stands)
                notes.append(f"module paths from the un-rewritten model: re-running passes failed ({exc})")
        tried: list[tuple[float, str, list[str]]] = []
        for how, builder in (("TorchScript trace", trace_module_map), ("torch.export", fx_module_map)):
            try:
                table = builder(module, example)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"module mapping via {how} failed ({type(exc).__name__})")
                continue
            for o in ops:
                o.module = ""
            share = assign_modules(ops, table)
            tried.append((share, how, [o.module for o in ops]))
            if share >= 0.5:
                break
        if not tried:
            return
        share, how, mods = max(tried, key=lambda t: t[0])
        for o, m in zip(ops, mods, strict=True):
            o.module = m
        notes.append(f"module paths: {share:.0%} of Core ML ops matched {how} value names; "
                     "the rest inherit the module of their input")


def build_profile(pred: Prediction, lm: dict[str, Any], *, model: str, device: str, artifact: str = "", sha: str = "",
                  notes: list[str] | None = None, timings: dict[str, float] | None = None,
                  resolution: int | None = None) -> Profile:
    """A Profile whose per-op rows (plus one overhead row) sum to the predicted total."""
    lo, hi = pred.band
    bpe = pred.spec.bytes_per_elem
    rows = [
        LayerRow(name=o.name, op_type=o.op_type, module=o.module, compute_unit=u,
                 ms=Stats.point(t, p10=t * lo, p90=t * hi), macs=int(o.macs) or None,
                 bytes=int((o.in_elems + o.out_elems + o.w_elems) * bpe))
        for o, t, u in zip(pred.ops, pred.op_ms, pred.units, strict=True)
    ]
    # the fixed cost of one inference belongs to the model as a whole (bench's "<root>" module)
    rows.append(LayerRow(name="(per-inference overhead)", op_type="overhead", module="<root>",
                         compute_unit=pred.spec.unit,
                         ms=Stats.point(pred.overhead_ms, p10=pred.overhead_ms * lo, p90=pred.overhead_ms * hi)))
    total = sum(r.ms.median for r in rows)
    held = lm.get("heldout", {})
    prov = lm.get("provenance", {})
    err = held.get("mape")
    n_fb = sum(1 for u in pred.units if u != pred.spec.unit)
    method = (f"predicted by the calibrated per-op cost model of '{device}' (roofline + per-kind efficiency + dispatch "
              f"+ fallback), protocol: {prov.get('protocol') or pred.spec.format}")
    all_notes = [
        f"predicted, not measured; held-out error ±{err:.0f}% (MAPE, {held.get('method', 'held out')}, "
        f"{held.get('n', 0)} rows, {held.get('within20', 0):.0%} within ±20%)" if err is not None else
        "predicted, not measured; no held-out error recorded",
        f"band p10-p90 from held-out residuals: x{lo:.2f} to x{hi:.2f}",
        *(notes or []),
    ]
    if n_fb:
        all_notes.append(f"{n_fb} ops predicted to fall back from the {pred.spec.unit} (rank > 4, oversized or "
                         "unsupported ops)")
    prof = Profile(
        model=model, format=pred.spec.format, device=device, runner="predicted", obtained="predicted",
        total_ms=Stats.point(total, p10=total * lo, p90=total * hi), layers=rows, artifact_sha256=sha,
        environment={"artifact": str(artifact), "resolution": resolution, "latency_model_date": prov.get("date"),
                     "calibration_data": prov.get("data"), "calibration_sha256": prov.get("data_sha256")},
        method=method, notes=all_notes,
        extra={
            "heldout_error_pct": err,
            "heldout": {k: held.get(k) for k in ("method", "n", "mape", "within10", "within20", "spearman")},
            "band_ratio": [lo, hi],
            "fit": lm.get("fit", {}),
            "rows_used": prov.get("rows_used"),
            "fallback_ops": n_fb,
            "timings_s": timings or {},
        },
    )
    prof.fill_shares()
    return prof


def predict_artifact(path: str | Path, device: str, model: str = "") -> Profile:
    """Predict a saved artifact on a calibrated device (no module-path mapping for Core ML)."""
    lm = latency_model_of(device)
    ops = features_of_artifact(path, lm["device"]["format"])
    return build_profile(predict_ops(ops, lm, device), lm, model=model or Path(path).stem, device=device,
                         artifact=str(path))
