"""Host calibration: time ONNX exports of a fixed set of models with ONNX Runtime, end to end and per layer.

The measured latencies are of this machine, so they are measured at calibration time (never
committed); exported ONNX files are cached under ``~/.cache/hybridexport/predict/onnx``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from hybridexport.predict.calibrate import MEASURED, Dataset, device_spec, fit_dataset
from hybridexport.predict.costmodel import PARAM_NAMES
from hybridexport.predict.features import FeatureTable

# Calibration set (fit; ~4 min to export once, ~4 min to measure) and a disjoint evaluation set
# (benchmarks/predictor_accuracy.py).
HOST_TRAIN: tuple[str, ...] = (
    "timm:mobilenetv2_100", "timm:mobilenetv3_large_100", "timm:mobilenetv4_conv_small", "timm:efficientnet_b0",
    "timm:resnet18", "timm:repvit_m1_0", "timm:mobileone_s1", "timm:fastvit_t8", "timm:efficientformerv2_s0",
    "mobilevit-xxs", "iformer-t", "timm:convnext_atto", "timm:ghostnet_100", "timm:deit_tiny_patch16_224",
    "timm:efficientvit_b0", "timm:regnetx_004", "timm:lcnet_100", "timm:mixnet_s", "timm:levit_conv_128s",
    "timm:mobilevitv2_050", "timm:regnety_002", "timm:regnetx_002", "mobileformer-26m", "timm:swiftformer_s",
    "timm:fastvit_sa12", "timm:mobilevitv2_100", "timm:tinynet_a", "timm:rexnet_100", "timm:semnasnet_075",
    "timm:efficientnet_lite0", "timm:mobilenetv1_100", "timm:convnext_pico", "timm:hardcorenas_a",
    "timm:resnet10t", "timm:edgenext_xx_small", "timm:starnet_s1",
    # more op mixes (grouped convs, SE blocks, token mixers, multiplier depthwise, ...): the 36 above alone
    # left 5-7 of the 30 evaluation models outside ±10 %, the 90 leave 3 (benchmarks/predictor_accuracy.py)
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


def cache_dir() -> Path:
    base = os.environ.get("HYBRIDEXPORT_CACHE") or Path.home() / ".cache" / "hybridexport"
    return Path(base) / "predict" / "onnx"


def family_of(builder: str) -> str:
    """``timm:mobilenetv3_large_100`` → ``mobilenetv3``; ``iformer-t`` → ``iformer``; ``timm:resnet18`` → ``resnet``."""
    name = builder.split(":", 1)[-1]
    head = re.split(r"[_\-]", name)[0]
    return re.sub(r"(?<!v)\d+$", "", head) or head


def onnx_for(builder: str, resolution: int | None = None) -> tuple[Path, int]:
    """The cached ONNX export of a builder (exported now if missing), and its resolution."""
    import torch

    from hybridexport.atomic import atomic_path
    from hybridexport.predict.build import build_module, default_resolution

    resolution = resolution or default_resolution(builder)
    tag = hashlib.sha256(f"{builder}|{resolution}|{torch.__version__}".encode()).hexdigest()[:12]
    path = cache_dir() / f"{builder.replace(':', '_')}-{resolution}-{tag}.onnx"
    if not path.exists():
        module = build_module(builder, resolution=resolution)
        x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            prog = torch.onnx.export(module, (x,), dynamo=True, verbose=False, input_names=["input"])
        with atomic_path(path) as tmp:
            prog.save(str(tmp))
    return path, resolution


def measure(path: Path, model: str, resolution: int, runs: int = 30, warmup: int = 5) -> tuple[float, Any]:
    """Median end-to-end ms of an ONNX file with the bench's host-onnxruntime runner (and its Profile)."""
    from hybridexport.bench.devices import load_device
    from hybridexport.bench.runners import BenchRequest, get_runner
    from hybridexport.export.manifest import Manifest, Parity

    data = path.read_bytes()
    manifest = Manifest(model=model, resolution=resolution, format="onnx", precision="fp32", path=str(path),
                        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), versions={}, passes=[],
                        parity=Parity(verified=False, reason="calibration export"), ops={}, rank5_tensors=0,
                        seconds=0.0)
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

    from hybridexport.predict.extract_onnx import load_onnx, onnx_features

    torch.set_num_threads(1)
    ds = Dataset(tables=[], table_of=[], y_ms=[], family=[], label=[])
    ready: list[tuple[str, Path, int]] = []
    for b in builders:
        try:
            path, res = onnx_for(b)
            ops = onnx_features(load_onnx(path))
        except Exception as exc:  # noqa: BLE001 (a model that cannot be exported is skipped, with why)
            ds.skipped.append({"model": b, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})
            continue
        ready.append((b, path, res))
        ds.tables.append(FeatureTable(model=b, format="onnx", resolution=res, ops=ops))
    best: dict[str, float] = {}
    failed: dict[str, str] = {}
    for _ in range(rounds):
        for b, path, res in ready:
            if b in failed:
                continue
            try:
                ms = measure_cpu(path, runs=runs) if timer == "cpu" else measure(path, b, res, runs=runs)[0]
            except Exception as exc:  # noqa: BLE001
                failed[b] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                continue
            best[b] = min(ms, best.get(b, float("inf")))
    from hybridexport.predict.host_layers import exported_node_ms

    tables, ds.tables = ds.tables, []
    for (b, path, _), t in zip(ready, tables, strict=True):
        if b in failed:
            ds.skipped.append({"model": b, "reason": failed[b]})
            continue
        if layers:
            ds.node_ms.append(exported_node_ms(path))
        ds.table_of.append(len(ds.tables))
        ds.tables.append(t)
        ds.y_ms.append(best[b])
        ds.family.append(family_of(b))
        ds.label.append(b)
        if progress:
            from hybridexport.console import err_console

            err_console.print(f"  measured {b}: {best[b]:.2f} ms", highlight=False)
    return ds


def calibrate_host(device: str = "host", builders: tuple[str, ...] | list[str] = HOST_TRAIN,
                   timer: str = "cpu") -> dict[str, Any]:
    """Measure the calibration set here and fit the host latency model."""
    import onnxruntime as ort

    from hybridexport.bench.devices import host_facts

    ds = host_dataset(builders, timer=timer)
    model = fit_dataset(ds, device_spec(device), MEASURED)
    model["provenance"] = {
        "source": "measured",
        "runner": "host-onnxruntime (1 thread, ORT_ENABLE_ALL)" if timer == "runner" else
                  "onnxruntime, runner settings (1 thread, ORT_ENABLE_ALL), thread CPU time",
        "timer": timer,
        "onnxruntime": ort.__version__,
        "machine": host_facts(),
        "protocol": "ONNX Runtime CPU, 1 thread, measured on this machine (min over 3 rounds of the median)",
        "per_layer": "ONNX Runtime profiler kernel times per exported node (median of 15 runs), fitted as "
                     "per-model shares of time per cost group",
        "layer_nodes": sum(len(ms) for ms in ds.node_ms),
        "date": _dt.date.today().isoformat(),
        "rows_used": len(ds.y_ms),
        "rows_skipped": len(ds.skipped),
        "skipped": ds.skipped,
        "models": list(builders),
        "params_order": list(PARAM_NAMES),
    }
    return model
