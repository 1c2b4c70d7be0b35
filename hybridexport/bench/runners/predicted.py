"""``predicted``: per-layer latency for a device that is not attached, from its calibrated cost model.

It reads the artifact's op table (features and module paths, written by ``convert``): nothing is
converted, rewritten or traced at bench time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.errors import InputFileError, RunnerUnavailableError
from hybridexport.latency.predictor import Prediction, latency_model_of, predict_ops, scaled
from hybridexport.modpath import ROOT
from hybridexport.optable import OpRow

STRETCH_NOTE = 1.05  # a wall/CPU stretch beyond this is named in the Profile's notes

if TYPE_CHECKING:
    from hybridexport.bench.devices import DeviceProfile


class PredictedRunner(Runner):
    name = "predicted"
    formats = ("coreml", "tflite", "onnx")
    obtained = "predicted"

    def formats_for(self, device: DeviceProfile) -> tuple[str, ...]:
        """The format the device's latency model was calibrated on first, then the other graph formats
        (predicted across formats, with a note: an artifact made elsewhere has no other form)."""
        fmt = device.priced_format
        return (fmt, *(f for f in self.formats if f != fmt)) if fmt else self.formats

    def availability(self, device: DeviceProfile) -> tuple[bool, str]:
        try:
            latency_model_of(device.name, device.raw)
        except (RunnerUnavailableError, InputFileError) as exc:
            return False, str(exc)
        return True, ""

    def run(self, request: BenchRequest) -> Profile:
        device = request.device
        lm = latency_model_of(device.name, device.raw)
        fmt = lm["device"]["format"]
        t0 = time.perf_counter()
        table = request.op_table()
        if table is None:
            raise InputFileError("the predicted runner needs an artifact; run `hybridexport convert MODEL --to "
                                 f"{fmt}` first")
        t_table = time.perf_counter() - t0
        notes: list[str] = []
        machine = None
        t1 = time.perf_counter()
        if device.kind == "host" and fmt == "onnx":  # this machine: its own speed and share of a core, probed
            pred, lm, machine, notes = predict_on_this_machine(table.ops, lm, device.name)
        else:
            if request.options.get("probe_device"):  # the attached phone's own speed, probed now
                from hybridexport.calibrate.device_probe import adapt_to_probed_device

                lm, machine, note = adapt_to_probed_device(lm, device, request.options)
                notes.append(note)
            pred = predict_ops(table.ops, lm, device.name)
        t_pred = time.perf_counter() - t1
        if table.format != fmt:
            fix = (f"convert the model with `--to {fmt}` for a like-with-like prediction" if request.manifest
                   else f"predict the {fmt} artifact of the same model for a like-with-like prediction")
            notes.append(f"predicted from a {table.format} graph by a latency model calibrated on {fmt} graphs (ops "
                         f"the {fmt} converter would fuse are counted apart; the held-out error does not cover this); "
                         f"{fix}")
        proto = device.protocol or {}
        delegate = {"cpu": "cpu", "gpu": "gpu", "npu": "npu", "edgetpu": "npu", "nnapi": "npu"}.get(
            str(proto.get("delegate", "")).lower(), pred.spec.unit)
        if (proto.get("precision") and proto.get("precision") != pred.spec.precision) or delegate != pred.spec.unit:
            notes.append(f"the latency model was calibrated for {pred.spec.precision} on the {pred.spec.unit} (the only "
                         f"published protocol for this phone), not for this profile's {proto.get('precision')} "
                         f"{proto.get('compute_units', '')} protocol")
        unmapped = sum(1 for o in table.ops if not o.module)
        if unmapped:
            why = "" if table.module_mapping else ": the artifact carries no module paths (rows keep the runtime's op names)"
            notes.append(f"{unmapped} of {len(table.ops)} ops could not be mapped to an nn.Module path{why}")
        m = request.manifest
        prof = build_profile(pred, lm, model=request.label, device=device.name, artifact=str(request.artifact_path()),
                             sha=m.sha256 if m else table.artifact_sha256, notes=notes,
                             timings={"op_table_s": round(t_table, 4), "predict_s": round(t_pred, 4)},
                             resolution=m.resolution if m else None,
                             input_shapes=[t.shape for t in table.inputs], fmt=table.format)
        if machine is not None:
            prof.extra["machine"] = machine
        return prof


def predict_on_this_machine(ops: list[OpRow], lm: dict[str, Any], device: str = "host", fresh: bool = False
                            ) -> tuple[Prediction, dict[str, Any], dict[str, Any], list[str]]:
    """The host prediction of this machine now: the latency model rescaled to its speed probe
    (:func:`~hybridexport.calibrate.machine.adapt_to_this_machine`, CPU time), then stretched by the wall time a
    run of that length takes here (:func:`~hybridexport.calibrate.sharing.stretch`: a core shared with other
    work). Returns the prediction, the rescaled model, what was probed, and the note lines."""
    from hybridexport.calibrate.machine import adapt_to_this_machine
    from hybridexport.calibrate.sharing import stretch

    lm, info, note = adapt_to_this_machine(lm, device, fresh=fresh)
    pred = predict_ops(ops, lm, device)
    factor, block = stretch(pred.total_ms / 1000.0, fresh=fresh)
    info["stretch"] = {"wall_over_cpu": round(factor, 4), "block_s": block}
    notes = [note]
    if factor > STRETCH_NOTE:
        notes.append(f"runs of ~{block * 1000:.0f} ms CPU time take x{factor:.2f} on the wall clock here now (the "
                     "core is shared with other work): every row is stretched by it")
    return scaled(pred, factor), lm, info, notes


def build_profile(pred: Prediction, lm: dict[str, Any], *, model: str, device: str, artifact: str = "", sha: str = "",
                  notes: list[str] | None = None, timings: dict[str, float] | None = None,
                  resolution: int | None = None, input_shapes: list[list[int]] | None = None,
                  fmt: str | None = None) -> Profile:
    """A Profile whose per-op rows (plus one overhead row) sum to the predicted total; ``fmt`` is the artifact's
    format (default: the one the latency model was calibrated on)."""
    lo, hi = pred.band
    bpe = pred.spec.bytes_per_elem
    rows = [
        LayerRow(name=o.name, op_type=o.op_type, module=o.module, compute_unit=u,
                 ms=Stats.point(t, p10=t * lo, p90=t * hi), macs=int(o.macs) or None,
                 bytes=int((o.in_elems + o.out_elems + o.w_elems) * bpe), module_source=o.module_source)
        for o, t, u in zip(pred.ops, pred.op_ms, pred.units, strict=True)
    ]
    # the fixed cost of one inference belongs to the model as a whole (bench's "<root>" module)
    rows.append(LayerRow(name="(per-inference overhead)", op_type="overhead", module=ROOT,
                         compute_unit=pred.spec.unit, module_source="op_table",
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
        model=model, format=fmt or pred.spec.format, device=device, runner="predicted", obtained="predicted",
        total_ms=Stats.point(total, p10=total * lo, p90=total * hi), layers=rows, artifact_sha256=sha,
        environment={"artifact": str(artifact), "resolution": resolution, "latency_model_date": prov.get("date"),
                     "calibration_data": prov.get("data"), "calibration_sha256": prov.get("data_sha256")},
        method=method, notes=all_notes, input_shapes=list(input_shapes or []),
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
