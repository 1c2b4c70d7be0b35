"""A phone's own roofline probe, measured through the runner that benchmarks on it (issue 20).

Two small models, exported in the device's protocol format and precision by ``convert`` itself: a GEMM
probe (four 512→512 pointwise convolutions on a 32×32 map, ~1.1 GMAC) and a copy probe (two multiply-adds of a
3×1024×1024 tensor with itself). Each runs on the attached device with its measuring runner (``android-adb``
with TFLite ``benchmark_model``, ``ios-coreml`` through coremltools' own benchmarker); the work is read from
each artifact's op table (MACs; activation bytes at the artifact's precision), so the figures are
throughputs of that unit under that protocol, in the host probe's form (:class:`machine.Probe`, timer
``wall``).

Where it is used: ``calibrate --device D --probe`` stores the probe in the profile (``probe``) and the fit
takes its peaks from it (:func:`calibrate.profiles.hardware`); ``bench -d D -r predicted --probe-device``
probes the attached device again and rescales the model by the ratio to the stored probe, like the host.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridexport.calibrate.machine import MEDIAN_Z, Probe
from hybridexport.errors import RunnerUnavailableError

if TYPE_CHECKING:
    from hybridexport.bench.devices import DeviceProfile
    from hybridexport.bench.profile import Stats
    from hybridexport.export.manifest import Manifest

PROBE_VERSION = 1
RUNS, WARMUP = 30, 5
BYTES_PER_ELEM = {"fp32": 4, "fp16": 2, "int8": 1}


def _modules() -> dict[str, tuple[Any, int]]:
    """name → (module, resolution) of the two probes."""
    from torch import nn

    class GemmProbe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 512, 1)
            self.body = nn.Sequential(*[nn.Conv2d(512, 512, 1) for _ in range(4)])

        def forward(self, x):
            return self.body(self.stem(x))

    class CopyProbe(nn.Module):
        def forward(self, x):
            for _ in range(2):  # no constant the converter can fold: each step reads and writes the tensor
                x = x * x + x
            return x

    return {"gemm": (GemmProbe(), 32), "copy": (CopyProbe(), 1024)}


def probe_artifacts(fmt: str, precision: str, out: Path | None = None) -> dict[str, Manifest]:
    """The probe models in ``fmt`` at ``precision`` (converted once, then taken from ``out``)."""
    import torch

    from hybridexport.calibrate.machine import cache_dir
    from hybridexport.export.api import convert
    from hybridexport.zoo import LoadedModel
    from hybridexport.zoo.registry import ModelSpec

    out = out or cache_dir().parent / f"device-probe-v{PROBE_VERSION}"
    arts = {}
    for name, (module, res) in _modules().items():
        torch.manual_seed(0)
        spec = ModelSpec(name=f"probe-{name}", family="probe", variant=name, resolution=res, source="hybridexport")
        (man,) = convert(LoadedModel(spec=spec, module=module.eval(), resolution=res), to=fmt, out=out,
                         precision=precision, rewrite=False, verify_inputs=1)
        arts[name] = man
    return arts


def _spread(st: Stats) -> float:
    """hi/lo of the 95 % interval of the median time (from samples; else from the p10-p90 band and n)."""
    if st.samples:
        from hybridexport.calibrate.machine import _ratio_spread

        return _ratio_spread(st.samples)
    sigma = max(st.p90 - st.p10, 0.0) / 2.563
    half = MEDIAN_Z * 1.2533 * sigma / math.sqrt(max(st.n, 1))
    return (st.median + half) / (st.median - half) if st.median > half else math.inf


def measuring_runner(device: DeviceProfile, options: dict[str, Any] | None = None) -> Any:
    """The first of the device's runners that measures and can serve it here now, or one-line why none can."""
    from hybridexport.bench.runners import get_runner

    why = []
    for name in device.runners:
        if name == "predicted":
            continue
        try:
            runner = get_runner(name).configure(options)
        except RunnerUnavailableError as exc:
            why.append(f"{name}: {exc}")
            continue
        ok, reason = runner.availability(device)
        if ok:
            return runner
        why.append(f"{name}: {reason}")
    raise RunnerUnavailableError(f"cannot probe {device.name}: no runner measures on it here ("
                                 + "; ".join(why or ["it lists none"]) + ")")


#: the calibration's compute unit → the android-adb delegate that runs on it
ANDROID_DELEGATE = {"cpu": "cpu", "gpu": "gpu", "npu": "nnapi"}


def measure_device_probe(device: DeviceProfile, options: dict[str, Any] | None = None, precision: str | None = None,
                         unit: str | None = None, runs: int = RUNS, warmup: int = WARMUP, out: Path | None = None
                         ) -> tuple[Probe, dict[str, Any]]:
    """Run both probes on the attached ``device`` at ``precision`` on ``unit`` (default: its protocol's; a
    calibration passes its own): its Probe and where it came from (runner, precision, device facts)."""
    from hybridexport.bench.runners import BenchRequest
    from hybridexport.optable import OpTable

    options = dict(options or {})
    if device.kind == "android" and unit in ANDROID_DELEGATE:
        options.setdefault("android_delegate", ANDROID_DELEGATE[unit])
    runner = measuring_runner(device, options)  # before converting: an absent phone is said at once
    t0 = time.perf_counter()
    threads = int(device.protocol.get("threads", 1) or 1)
    precision = precision or device.precision
    arts = probe_artifacts(device.format, precision, out)
    fig: dict[str, tuple[float, float]] = {}
    env: dict[str, Any] = {}
    for name, man in arts.items():
        ops = OpTable.load(man.op_table_path()).ops
        prof = runner.run(BenchRequest(device=device, manifest=man, runs=runs, warmup=warmup, threads=threads,
                                       options=options))
        env = prof.environment
        seconds = prof.total_ms.median / 1000.0
        if name == "gemm":
            work = 2.0 * sum(o.macs for o in ops) / 1e9  # GFLOP
        else:
            work = sum(o.in_elems + o.out_elems for o in ops) * BYTES_PER_ELEM.get(man.precision, 4) / 1e9  # GB
        fig[name] = (work / seconds, _spread(prof.total_ms))
    probe = Probe(gemm_gflops=fig["gemm"][0], bandwidth_gbs=fig["copy"][0], gemm_spread=fig["gemm"][1],
                  bandwidth_spread=fig["copy"][1], threads=threads, timer="wall", repeats=2 * runs,
                  seconds=round(time.perf_counter() - t0, 3), when=time.strftime("%Y-%m-%dT%H:%M:%S"))
    source = {"runner": runner.name, "format": device.format, "precision": precision, "unit": unit or "",
              **{k: env[k] for k in ("device_model", "soc", "serial", "delegate", "runtime") if k in env}}
    return probe, source


def probe_record(probe: Probe, source: dict[str, Any]) -> dict[str, Any]:
    """The profile's ``probe`` key: the probe and where it was measured."""
    return {"version": PROBE_VERSION, **probe.to_dict(), "source": source}


def stored_probe(profile: dict[str, Any]) -> Probe | None:
    """The probe a profile stores (``probe`` key), or None."""
    rec = profile.get("probe")
    if not isinstance(rec, dict):
        return None
    return Probe.from_dict({k: v for k, v in rec.items() if k not in ("version", "source")}, "profile probe")


def adapt_to_probed_device(lm: dict[str, Any], device: DeviceProfile, options: dict[str, Any] | None = None
                           ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A phone's latency model rescaled to the attached device's probe against the probe its fit took its
    peaks from (:func:`machine.rescaled`; the CPU fallback unit is not probed and stays), what was compared,
    and one note line; unchanged, with the reason as the note, when either probe is missing."""
    from hybridexport.calibrate.machine import rescaled

    ref = (lm.get("provenance") or {}).get("probe")
    fix = f"run `hybridexport calibrate --device {device.name} --probe` with one attached (~1 min of probing)"
    if not isinstance(ref, dict):
        return lm, {"probe": None}, (f"not rescaled to the attached device: {device.name}'s latency model records no "
                                     f"probe of its own device to compare with; {fix}")
    cal = stored_probe({"probe": ref})
    spec = lm["device"]
    try:
        here, source = measure_device_probe(device, options, precision=spec["precision"], unit=spec["unit"])
    except RunnerUnavailableError as exc:
        return lm, {"probe": None, "calibration_probe": ref}, f"not rescaled to an attached device: {exc}"
    g, b = here.gemm_gflops / cal.gemm_gflops, here.bandwidth_gbs / cal.bandwidth_gbs
    info = {"probe": {**here.to_dict(), "source": source}, "calibration_probe": ref,
            "ratios": {"gemm": g, "bandwidth": b}}
    where = source.get("device_model") or source["runner"]
    note = (f"rescaled by probe to the attached {where} ({here.gemm_gflops:.1f} GFLOP/s, {here.bandwidth_gbs:.2f} "
            f"GB/s) vs {cal.gemm_gflops:.1f} GFLOP/s, {cal.bandwidth_gbs:.2f} GB/s at calibration "
            f"(compute x{g:.2f}, memory x{b:.2f})")
    return rescaled(lm, g, b, fallback=1.0), info, note
