"""Host calibration: time ONNX exports of a fixed set of models with ONNX Runtime, end to end and per layer.

The measured latencies are of this machine, so they are measured at calibration time (never
committed). The models are exported in deployment form through ``convert`` (:mod:`hybridexport.calibrate.build`),
so the op tables fitted are the ones a user's artifacts carry.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.calibrate.fit import MEASURED, Dataset, device_spec, fit_dataset
from hybridexport.latency.costmodel import PARAM_NAMES
from hybridexport.latency.features import FeatureTable

if TYPE_CHECKING:
    from hybridexport.export.manifest import Manifest

# Calibration set (fit; ~4 min to export once, ~4 min to measure) and a disjoint evaluation set
# (benchmarks/predictor_accuracy.py, which also says why the set is this large).
HOST_TRAIN: tuple[str, ...] = (
    "timm:mobilenetv2_100", "timm:mobilenetv3_large_100", "timm:mobilenetv4_conv_small", "timm:efficientnet_b0",
    "timm:resnet18", "timm:repvit_m1_0", "timm:mobileone_s1", "timm:fastvit_t8", "timm:efficientformerv2_s0",
    "mobilevit-xxs", "iformer-t", "timm:convnext_atto", "timm:ghostnet_100", "timm:deit_tiny_patch16_224",
    "timm:efficientvit_b0", "timm:regnetx_004", "timm:lcnet_100", "timm:mixnet_s", "timm:levit_conv_128s",
    "timm:mobilevitv2_050", "timm:regnety_002", "timm:regnetx_002", "mobileformer-26m", "timm:swiftformer_s",
    "timm:fastvit_sa12", "timm:mobilevitv2_100", "timm:tinynet_a", "timm:rexnet_100", "timm:semnasnet_075",
    "timm:efficientnet_lite0", "timm:mobilenetv1_100", "timm:convnext_pico", "timm:hardcorenas_a",
    "timm:resnet10t", "timm:edgenext_xx_small", "timm:starnet_s1",
    # more op mixes: grouped convs, SE blocks, token mixers, multiplier depthwise, ...
    "timm:mobilenetv3_rw", "timm:mobilenetv2_110d", "timm:efficientnet_es", "timm:efficientnet_lite1",
    "timm:tf_mobilenetv3_small_075", "timm:lcnet_075", "timm:mnasnet_small", "timm:spnasnet_100",
    "timm:fbnetc_100", "timm:ghostnet_050", "timm:hardcorenas_c", "timm:hardcorenas_f", "timm:mixnet_m",
    "timm:semnasnet_100", "timm:tinynet_c", "timm:tinynet_d", "timm:regnetx_006", "timm:regnety_006",
    "timm:resnet14t", "timm:repghostnet_100", "timm:repghostnet_050", "timm:efficientvit_m0",
    "timm:efficientvit_m2", "timm:efficientvit_m4", "timm:levit_128", "timm:levit_conv_192",
    "timm:rexnet_130", "timm:tiny_vit_5m_224", "timm:edgenext_x_small", "timm:vit_tiny_patch16_224",
    "timm:deit_tiny_distilled_patch16_224", "timm:xcit_nano_12_p16_224", "timm:convit_tiny", "timm:pvt_v2_b0",
    "timm:mobileone_s3", "timm:efficientformerv2_s2", "timm:mobilenetv4_conv_blur_medium",
    "timm:mobilenetv4_hybrid_medium_075", "timm:ghostnetv3_050", "timm:starnet_s2", "timm:starnet_s050",
    "timm:shvit_s2", "timm:convnext_nano", "timm:tf_efficientnet_lite0", "timm:dla46_c", "timm:resnet18d",
    "timm:efficientnet_b0_g8_gn", "timm:crossvit_tiny_240", "timm:coat_lite_tiny", "timm:inception_next_atto",
    "timm:tinynet_e", "timm:mobilenetv1_100h", "timm:hgnetv2_b0", "timm:fasternet_t0",
)
HOST_TEST: tuple[str, ...] = (
    "timm:mobilenetv2_050", "timm:mobilenetv2_140", "timm:mobilenetv3_small_100", "timm:mobilenetv3_large_075",
    "timm:mobilenetv4_conv_medium", "timm:mobilenetv4_hybrid_medium", "timm:efficientnet_b1", "timm:resnet34",
    "timm:repvit_m0_9", "timm:repvit_m1_5", "timm:mobileone_s0", "timm:mobileone_s2", "timm:fastvit_t12",
    "timm:fastvit_s12", "timm:efficientformerv2_s1", "timm:efficientformer_l1", "mobilevit-xs",
    "timm:mobilevitv2_075", "iformer-s", "iformer-m", "timm:convnext_femto", "timm:ghostnetv2_100",
    "timm:shvit_s1", "timm:swiftformer_xs", "timm:efficientvit_b1", "timm:pit_xs_224", "timm:mnasnet_100",
    "timm:regnety_004", "timm:lcnet_050", "mobileformer-96m",
)


def family_of(builder: str) -> str:
    """``timm:mobilenetv3_large_100`` → ``mobilenetv3``; ``iformer-t`` → ``iformer``; ``timm:resnet18`` → ``resnet``."""
    name = builder.split(":", 1)[-1]
    head = re.split(r"[_\-]", name)[0]
    return re.sub(r"(?<!v)\d+$", "", head) or head


def onnx_for(builder: str, resolution: int | None = None) -> tuple[Manifest, int]:
    """The builder's ONNX artifact in deployment form (converted now unless cached), and its resolution."""
    from hybridexport.calibrate.build import default_resolution, deploy_artifact

    resolution = resolution or default_resolution(builder)
    return deploy_artifact(builder, "onnx", "fp32", resolution), resolution


def measure(manifest: Manifest, runs: int = 30, warmup: int = 5) -> tuple[float, Any]:
    """Median end-to-end ms of an ONNX artifact with the bench's host-onnxruntime runner (and its Profile)."""
    from hybridexport.bench.devices import load_device
    from hybridexport.bench.runners import BenchRequest, get_runner

    runner = get_runner("host-onnxruntime")
    prof = runner.run(BenchRequest(device=load_device("host"), manifest=manifest, runs=runs, warmup=warmup, threads=1))
    return prof.total_ms.median, prof


def measure_cpu(path: Path, runs: int = 20, warmup: int = 5) -> float:
    """Median CPU time (ms) of one inference on the calling thread: onnxruntime with the runner's settings
    (1 intra-op thread, sequential, ORT_ENABLE_ALL) runs every kernel on this thread, so its CPU time is
    the inference's cost even when other processes share the cores (wall time is not, on a busy machine)."""
    import statistics
    import time

    import numpy as np

    from hybridexport.bench.runners.host_onnxruntime import cpu_session

    sess = cpu_session(path, 1)
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype("float32")
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    out = []
    for _ in range(runs):
        t0 = time.thread_time_ns()
        sess.run(None, {inp.name: x})
        out.append((time.thread_time_ns() - t0) / 1e6)
    return statistics.median(out)


def host_dataset(builders: tuple[str, ...] | list[str], progress: bool = True, rounds: int = 3,
                 runs: int = 20, timer: str = "runner", layers: bool = True) -> Dataset:
    """Export, featurize and time each builder on this machine.

    Every model is timed ``rounds`` times, round-robin over all models, and its latency is the lowest
    round median: a busy machine only ever adds time, and round-robin spreads slow spells over all models.
    ``timer``: ``runner`` (the bench's host-onnxruntime runner, wall time) or ``cpu`` (thread CPU time
    with the same session settings; stable on a shared machine, see :func:`measure_cpu`).
    ``layers``: also profile each model once with ONNX Runtime's profiler and keep every exported node's
    kernel time (``Dataset.node_ms``), the per-layer observations of the host fit.
    """
    import torch

    from hybridexport.calibrate.machine import load_1m
    from hybridexport.optable import OpTable

    torch.set_num_threads(1)
    ds = Dataset(tables=[], table_of=[], y_ms=[], family=[], label=[])
    ready: list[tuple[str, Manifest, int]] = []
    for b in builders:
        try:
            man, res = onnx_for(b)
            ops = OpTable.load(man.op_table_path()).ops
        except Exception as exc:  # noqa: BLE001 (a model that cannot be exported is skipped, with why)
            ds.skipped.append({"model": b, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})
            continue
        ready.append((b, man, res))
        ds.tables.append(FeatureTable(model=b, format="onnx", resolution=res, ops=ops))
    best: dict[str, float] = {}
    failed: dict[str, str] = {}
    for _ in range(rounds):
        for b, man, _res in ready:
            if b in failed:
                continue
            try:
                ms = measure_cpu(Path(man.path), runs=runs) if timer == "cpu" else measure(man, runs=runs)[0]
            except Exception as exc:  # noqa: BLE001
                failed[b] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                continue
            best[b] = min(ms, best.get(b, float("inf")))
            ds.round_ms.setdefault(b, []).append(ms)
            ds.load_1m[b] = max(load_1m(), ds.load_1m.get(b, 0.0))
    from hybridexport.calibrate.host_layers import exported_node_ms

    tables, ds.tables = ds.tables, []
    for (b, man, _), t in zip(ready, tables, strict=True):
        if b in failed:
            ds.skipped.append({"model": b, "reason": failed[b]})
            continue
        if layers:
            ds.node_ms.append(exported_node_ms(Path(man.path)))
        ds.table_of.append(len(ds.tables))
        ds.tables.append(t)
        ds.y_ms.append(best[b])
        ds.family.append(family_of(b))
        ds.label.append(b)
        if progress:
            from hybridexport.console import err_console

            err_console.print(f"  measured {b}: {best[b]:.2f} ms", highlight=False)
    return ds


def measure_host(builders: tuple[str, ...] | list[str] = HOST_TRAIN, timer: str = "cpu", allow_load: bool = False,
                 fit_models: tuple[str, ...] | list[str] | None = None, progress: bool = True,
                 ) -> tuple[Dataset, dict[str, Any]]:
    """Time ``builders`` here, with the machine's record (:mod:`hybridexport.calibrate.measurements` ``meta``).

    The machine is fingerprinted and probed (:mod:`hybridexport.calibrate.machine`) before measuring and
    probed again after: a loaded or unsteady machine is refused (MachineBusyError) before the long
    measurement, or after it when the core's speed or the timings themselves drifted (first round against
    last, :func:`machine.refusals_after`), unless ``allow_load`` (then the conditions are recorded). ``fit_models``: the labels a fit uses (default all; the rest are held out)."""
    import onnxruntime as ort

    from hybridexport.bench.devices import host_facts
    from hybridexport.calibrate import machine

    probe_timer = "wall" if timer == "runner" else "cpu"
    fp = machine.fingerprint(1)
    before = machine.probe(1, probe_timer, fresh=True)
    conditions = machine.refusals_before(fp, before)
    if conditions and not allow_load:
        machine.refuse(conditions, "before measuring")
    ds = host_dataset(builders, timer=timer, progress=progress)
    after = machine.probe(1, probe_timer, fresh=True)
    timings = machine.timing_drift(ds.round_ms)
    late, noted = machine.refusals_after(before, after, timings)
    if late and not allow_load:
        machine.refuse(late, "after measuring (nothing written)")
    late += noted
    meta = {
        "timer": timer,
        "onnxruntime": ort.__version__,
        "date": _dt.date.today().isoformat(),
        "models": list(builders),
        "fit_models": list(fit_models if fit_models is not None else builders),
        "machine": {**host_facts(), "fingerprint": fp.to_dict(), "probe_before": before.to_dict(),
                    "probe_after": after.to_dict(), "timing_drift": timings, "conditions": conditions + late,
                    "allow_load": allow_load},
    }
    return ds, meta


def fit_subset(ds: Dataset, names: tuple[str, ...] | list[str]) -> Dataset:
    """The observations of ``ds`` whose label is in ``names`` (tables and node times with them)."""
    keep = set(names)
    out = Dataset(tables=[], table_of=[], y_ms=[], family=[], label=[], skipped=list(ds.skipped))
    for i, lab in enumerate(ds.label):
        if lab not in keep:
            continue
        out.table_of.append(len(out.tables))
        out.tables.append(ds.tables[ds.table_of[i]])
        if ds.node_ms:
            out.node_ms.append(ds.node_ms[ds.table_of[i]])
        out.y_ms.append(ds.y_ms[i])
        out.family.append(ds.family[i])
        out.label.append(lab)
        if lab in ds.load_1m:
            out.load_1m[lab] = ds.load_1m[lab]
    return out


def fit_host(ds: Dataset, meta: dict[str, Any], device: str = "host", refit_from: str | None = None) -> dict[str, Any]:
    """Fit the host latency model on the ``fit_models`` of a measurement, with its provenance."""
    from hybridexport.calibrate import machine

    fit_models = meta.get("fit_models") or meta["models"]
    used = fit_subset(ds, fit_models)
    model = fit_dataset(used, device_spec(device), MEASURED)
    mach = meta["machine"]
    if mach.get("conditions"):
        machine.widen_band(model["band"], machine.Probe.from_dict(mach["probe_before"]),
                           machine.Probe.from_dict(mach["probe_after"]))
    timer = meta["timer"]
    model["provenance"] = {
        "source": "measured",
        "runner": "host-onnxruntime (1 thread, ORT_ENABLE_ALL)" if timer == "runner" else
                  "onnxruntime, runner settings (1 thread, ORT_ENABLE_ALL), thread CPU time",
        "timer": timer,
        "onnxruntime": meta["onnxruntime"],
        "machine": {**mach, "load_1m_per_model": {k: round(v, 2) for k, v in used.load_1m.items()}},
        "protocol": "ONNX Runtime CPU, 1 thread, measured on this machine (min over 3 rounds of the median)",
        "per_layer": "ONNX Runtime profiler kernel times per exported node (median of 15 runs), fitted as "
                     "per-model shares of time per cost group",
        "layer_nodes": sum(len(ms) for ms in used.node_ms),
        "date": meta["date"],
        "rows_used": len(used.y_ms),
        "rows_skipped": len(used.skipped),
        "skipped": used.skipped,
        "models": list(fit_models),
        "params_order": list(PARAM_NAMES),
    }
    if refit_from is not None:
        model["provenance"]["refit"] = {"date": _dt.date.today().isoformat(), "measurements": refit_from}
    return model


def calibrate_host(device: str = "host", builders: tuple[str, ...] | list[str] = HOST_TRAIN,
                   timer: str = "cpu", allow_load: bool = False, save_to: Path | None = None) -> dict[str, Any]:
    """Measure the calibration set here (:func:`measure_host`) and fit the host latency model; with
    ``save_to``, the measurements are stored there first (:mod:`hybridexport.calibrate.measurements`),
    so ``--refit`` can fit again without timing."""
    from hybridexport.calibrate import measurements

    ds, meta = measure_host(builders, timer, allow_load)
    ds = measurements.compact_dataset(ds)  # the fit a refit of the stored file reproduces
    if save_to is not None:
        measurements.save(ds, meta, save_to)
    return fit_host(ds, meta, device)


def refit_host(device: str = "host", path: Path | None = None) -> dict[str, Any]:
    """Fit again from stored measurements (default ``profiles/<device>.measurements.json.gz``): no timing."""
    from hybridexport.calibrate import measurements

    path = path or measurements.measurements_path(device)
    ds, meta = measurements.load(path)
    return fit_host(ds, meta, device, refit_from=path.name)
