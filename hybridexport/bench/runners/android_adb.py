"""A phone (or emulator) over adb: TFLite ``benchmark_model`` with per-operator profiling.

How a run goes (every adb call is an argument list, no shell string on the host)::

    adb -s SERIAL shell getprop ro.product.model          # + ro.soc.model, ro.board.platform, ...
    adb -s SERIAL push model.tflite /data/local/tmp/hybridexport/model.tflite
    adb -s SERIAL push benchmark_model /data/local/tmp/hybridexport/benchmark_model
    adb -s SERIAL shell chmod 755 /data/local/tmp/hybridexport/benchmark_model
    adb -s SERIAL shell taskset MASK /data/local/tmp/hybridexport/benchmark_model \\
        --graph=... --num_threads=T --warmup_runs=W --num_runs=N --warmup_min_secs=0 --min_secs=0 \\
        --enable_op_profiling=true [--use_xnnpack=true | --use_gpu=true | --use_nnapi=true]

``taskset MASK`` pins the process to the big core(s) named by the device profile's
``protocol.cpu_mask`` (hex CPU mask, e.g. ``c0`` = CPUs 6-7 on Tensor G1/G2, ``80`` = CPU 7 on the
Snapdragon 8 Gen 2). The ``benchmark_model`` binary is the user's (``--benchmark-binary PATH`` or
``$HYBRIDEXPORT_BENCHMARK_MODEL``): the android_aarch64 build of
``//tensorflow/lite/tools/benchmark:benchmark_model`` (LiteRT publishes nightly prebuilt binaries).

Rows → modules: a row naming op 7 (``[name;name]:7``) takes op 7's module from the artifact's op table
when the op types match, else the module its tensor names locate (litert-torch locations);
XNNPACK rows (``Delegate/Convolution (NHWC, F32) IGEMM:3``) are aligned in order with the model's
ops (:func:`hybridexport.bench.mapping.align`); GPU/NNAPI partition rows take the common module of
the tensors they list. benchmark_model prints means per op, not per-run samples: each row's
``median`` holds ``avg ms × times called``; the total's p10/p90 are a normal approximation from
its mean and standard deviation, clipped to [min, max].
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hybridexport import modpath
from hybridexport.bench.mapping import align, aligned_modules, is_xnnpack_op, tflite_kind, xnn_kinds
from hybridexport.bench.parsers.benchmark_model import BenchmarkModelOutput, RunStats, parse_benchmark_model
from hybridexport.bench.probing import (
    BENCH_ENV,
    PROBE_ENV,
    bench_timeout,
    once,
    probe_timeout,
    transfer_timeout,
)
from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.bench.runners._common import artifact, version_of
from hybridexport.errors import RunnerUnavailableError
from hybridexport.optable import OpTable

REMOTE_DIR = "/data/local/tmp/hybridexport"
DELEGATES = {"cpu": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"]}
UNITS = {"cpu": "cpu (xnnpack)", "gpu": "gpu", "nnapi": "npu (nnapi)"}
PROPS = ("ro.product.model", "ro.product.manufacturer", "ro.soc.model", "ro.soc.manufacturer",
         "ro.board.platform", "ro.build.version.release", "ro.build.version.sdk", "ro.product.cpu.abi")
BINARY_HELP = ("pass --benchmark-binary PATH or set HYBRIDEXPORT_BENCHMARK_MODEL to an android_aarch64 build of "
               "TFLite's benchmark_model (bazel build -c opt --config=android_arm64 "
               "//tensorflow/lite/tools/benchmark:benchmark_model, or LiteRT's nightly prebuilt)")


class Adb:
    """Thin wrapper: every call is ``[adb, -s, serial, *args]``, output captured, errors one line."""

    def __init__(self, exe: str, serial: str | None = None, options: dict[str, Any] | None = None):
        self.exe, self.serial, self.options = exe, serial, options or {}
        self.timeout = probe_timeout(self.options)

    def __call__(self, *args: str, timeout: float | None = None) -> str:
        cmd = [self.exe, *(["-s", self.serial] if self.serial else []), *args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout, check=False)
        except FileNotFoundError:
            raise RunnerUnavailableError(f"adb not found at '{self.exe}'; install Android platform-tools") from None
        except subprocess.TimeoutExpired:
            raise RunnerUnavailableError(
                f"`adb {' '.join(args[:2])}` gave no answer in {timeout or self.timeout:.0f} s: replug the phone or "
                f"`adb kill-server`; allow longer with ${PROBE_ENV} / ${BENCH_ENV}") from None
        if res.returncode != 0:
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise RunnerUnavailableError(f"`adb {' '.join(args[:3])}` failed: {msg[-1] if msg else res.returncode}")
        return res.stdout

    def shell(self, *args: str, timeout: float | None = None) -> str:
        """Run a command in the phone's shell; adb joins the words into one remote command line, so each
        is quoted for that shell (a crafted file name cannot run commands on the phone)."""
        return self("shell", " ".join(shlex.quote(a) for a in args), timeout=timeout)

    def devices(self) -> list[tuple[str, str]]:
        """``adb devices`` → [(serial, state)] (state: device, unauthorized, offline, ...)."""
        out = once(("adb devices", self.exe), lambda: Adb(self.exe, None, self.options)("devices"))
        rows = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
                rows.append((parts[0], parts[1]))
        return rows

    def props(self) -> dict[str, str]:
        """All system properties in one call (``adb shell getprop`` prints ``[key]: [value]`` lines)."""
        out = {}
        for line in once(("adb getprop", self.exe, self.serial), lambda: self.shell("getprop")).splitlines():
            m = re.match(r"^\[([^\]]+)\]: \[(.*)\]$", line.strip())
            if m:
                out[m.group(1)] = m.group(2)
        return out


def adb_executable(options: dict[str, Any]) -> str | None:
    exe = options.get("adb") or os.environ.get("ADB")
    return exe if exe else shutil.which("adb")


def benchmark_binary(options: dict[str, Any]) -> str | None:
    return options.get("benchmark_binary") or os.environ.get("HYBRIDEXPORT_BENCHMARK_MODEL") or None


def matches_device(props: dict[str, str], device: Any) -> bool:
    m = device.match or {}
    model = props.get("ro.product.model", "")
    socs = {props.get("ro.soc.model", "").lower(), props.get("ro.board.platform", "").lower()} - {""}
    if model and model in m.get("models", []):
        return True
    return bool(socs & {s.lower() for s in m.get("soc_models", []) + m.get("board_platforms", [])})


class AndroidAdbRunner(Runner):
    name = "android-adb"
    formats = ("tflite",)

    def _connect(self, device: Any) -> tuple[Adb, dict[str, str]]:
        """The adb handle and properties of the phone serving ``device``, or RunnerUnavailableError why not.

        A phone that is not the profile's model is refused, unless it was named with ``--serial``
        (an emulator, a close relative): then it is used and the mismatch is recorded.
        """
        if device.kind != "android":
            raise RunnerUnavailableError(f"serves Android devices only ('{device.name}' is {device.kind})")
        exe = adb_executable(self.options)
        if not exe:
            raise RunnerUnavailableError("adb not found on PATH (install Android platform-tools or set $ADB)")
        adb = Adb(exe, None, self.options)
        found = adb.devices()
        want = self.options.get("serial") or os.environ.get("ANDROID_SERIAL")
        ready = [s for s, st in found if st == "device"]
        if want:
            state = dict(found).get(want)
            if state is None:
                raise RunnerUnavailableError(f"no adb device with serial {want} (attached: {', '.join(s for s, _ in found) or 'none'})")
            if state != "device":
                raise RunnerUnavailableError(f"adb device {want} is '{state}'" + (
                    "; accept the USB debugging prompt on the phone" if state == "unauthorized" else ""))
            serial = want
        elif not ready:
            if found:
                states = ", ".join(f"{s} ({st})" for s, st in found)
                raise RunnerUnavailableError(f"no usable adb device: {states}; unlock the phone and accept USB debugging")
            raise RunnerUnavailableError("no adb device attached (`adb devices` lists none); connect a phone with USB "
                                         "debugging on, or start an emulator")
        else:
            serial = None
            for s in ready:
                props = Adb(exe, s, self.options).props() if len(ready) > 1 else {}
                if len(ready) == 1 or matches_device(props, device):
                    serial = s
                    break
            if serial is None:
                if len(ready) == 1:
                    serial = ready[0]
                else:
                    raise RunnerUnavailableError(f"several adb devices ({', '.join(ready)}); pick one with --serial")
        adb = Adb(exe, serial, self.options)
        every = adb.props()
        props = {k: every.get(k, "") for k in PROPS}
        if not matches_device(props, device) and not want:
            raise RunnerUnavailableError(
                f"the attached phone is '{props.get('ro.product.model') or '?'}' "
                f"(soc {props.get('ro.soc.model') or props.get('ro.board.platform') or '?'}, serial {serial}), "
                f"not a {device.display_name}; pick another --device or --serial"
            )
        return adb, props

    def availability(self, device: Any) -> tuple[bool, str]:
        try:
            self._connect(device)
        except RunnerUnavailableError as exc:
            return False, str(exc)
        binary = benchmark_binary(self.options)
        if not binary:
            return False, f"no benchmark_model binary: {BINARY_HELP}"
        if not Path(binary).is_file():
            return False, f"benchmark_model binary '{binary}' does not exist"
        return True, ""

    def run(self, request: BenchRequest) -> Profile:
        self.configure({**self.options, **request.options})
        device = request.device
        adb, props = self._connect(device)
        binary = benchmark_binary(self.options)
        if not binary or not Path(binary).is_file():
            raise RunnerUnavailableError(f"no benchmark_model binary: {BINARY_HELP}")
        model = artifact(request, "tflite")
        delegate = str(self.options.get("android_delegate") or device.protocol.get("delegate", "cpu"))
        if delegate not in DELEGATES:
            raise RunnerUnavailableError(f"unknown --android-delegate '{delegate}' (choose {', '.join(DELEGATES)})")
        mask = str(self.options.get("cpu_mask") or device.protocol.get("cpu_mask", "") or "")
        remote_model, remote_bin = f"{REMOTE_DIR}/{model.name}", f"{REMOTE_DIR}/benchmark_model"
        adb.shell("mkdir", "-p", REMOTE_DIR)
        adb("push", str(model), remote_model, timeout=transfer_timeout(model.stat().st_size, self.options))
        adb("push", str(binary), remote_bin, timeout=transfer_timeout(Path(binary).stat().st_size, self.options))
        adb.shell("chmod", "755", remote_bin)
        out = adb.shell(*(["taskset", mask] if mask else []), remote_bin, f"--graph={remote_model}",
                        f"--num_threads={request.threads}", f"--warmup_runs={request.warmup}",
                        f"--num_runs={request.runs}", "--warmup_min_secs=0", "--min_secs=0",
                        "--enable_op_profiling=true", *DELEGATES[delegate],
                        timeout=bench_timeout(request.runs, request.warmup, self.options))
        parsed = parse_benchmark_model(out, source=f"benchmark_model output from {adb.serial or 'the phone'}")
        profile = profile_from_benchmark_model(
            parsed, model, request, runner=self.name, delegate=delegate,
            environment={
                "device_model": props.get("ro.product.model", ""),
                "manufacturer": props.get("ro.product.manufacturer", ""),
                "soc": props.get("ro.soc.model") or props.get("ro.board.platform", ""),
                "board_platform": props.get("ro.board.platform", ""),
                "android": props.get("ro.build.version.release", ""),
                "sdk": props.get("ro.build.version.sdk", ""),
                "abi": props.get("ro.product.cpu.abi", ""),
                "serial": adb.serial,
                "cpu_mask": mask,
                "threads": request.threads,
                "delegate": delegate,
                "runtime": "TFLite benchmark_model",
                "benchmark_model": Path(binary).name,
                "benchmark_settings": parsed.settings,
            },
        )
        if not matches_device(props, device):
            profile.notes.append(f"measured on '{props.get('ro.product.model')}' (serial {adb.serial}), which is not a "
                                 f"{device.display_name}: chosen with --serial")
        return profile


def _total_stats(st: RunStats) -> Stats:
    avg = (st.avg_us if st.avg_us is not None else st.curr_us) / 1000.0
    std = (st.std_us or 0.0) / 1000.0
    lo = st.min_us / 1000.0 if st.min_us is not None else avg
    hi = st.max_us / 1000.0 if st.max_us is not None else avg
    z = 1.2816  # 10th/90th percentile of a normal distribution
    return Stats.point(avg, p10=max(lo, avg - z * std), p90=min(hi, avg + z * std), n=st.count)


def map_rows(parsed: BenchmarkModelOutput, table: OpTable | None) -> list[tuple[str, str]]:
    """(module path, how it was found) per operator row (see the module docstring for the rules)."""
    ops = table.ops if table is not None else []
    modules: list[tuple[str, str]] = [("", "")] * len(parsed.rows)
    xnn_rows = []
    for i, row in enumerate(parsed.rows):
        if is_xnnpack_op(row.name):
            xnn_rows.append(i)
            continue
        if row.node_index is not None and row.node_index < len(ops) and ops[row.node_index].op_type == row.node_type:
            modules[i] = (ops[row.node_index].module, "op_table")
            continue
        mods = [m for m in (modpath.from_litert_name(n) for n in row.tensor_names) if m]
        if mods:
            modules[i] = (modpath.common_module(mods), "metadata")
    if xnn_rows and ops:
        explicit = {r.node_index for r in parsed.rows if not is_xnnpack_op(r.name) and r.node_index is not None}
        src = [o for k, o in enumerate(ops) if k not in explicit]
        matches = align([xnn_kinds(parsed.rows[i].name) for i in xnn_rows], [tflite_kind(o.op_type) for o in src])
        for i, mod in zip(xnn_rows, aligned_modules(matches, [o.module for o in src])):
            modules[i] = (mod, "alignment")
    return modules


def profile_from_benchmark_model(
    parsed: BenchmarkModelOutput,
    model: Path,
    request: BenchRequest,
    runner: str,
    delegate: str,
    environment: dict[str, Any],
) -> Profile:
    """A Profile from one parsed benchmark_model run of ``model`` (module paths through its op table)."""
    table = request.op_table()
    modules = map_rows(parsed, table)
    unit = UNITS.get(delegate, delegate)
    rows = []
    for row, (mod, how) in zip(parsed.rows, modules):
        if row.node_type.startswith("TfLiteGpuDelegate"):
            cu = "gpu"
        elif row.node_type.startswith("TfLiteNnapi") or row.node_type.startswith("TfLiteHexagon"):
            cu = "npu"
        elif is_xnnpack_op(row.name) or row.node_type.startswith("TfLiteXNNPack"):
            cu = "cpu (xnnpack)"
        else:
            cu = "cpu" if delegate == "cpu" else f"cpu (fallback from {unit})"
        ms = row.ms_per_run
        rows.append(LayerRow(name=row.name, op_type=row.node_type, module=mod, compute_unit=cu,
                             ms=Stats.point(ms, n=parsed.total.count), module_source=how if mod else ""))
    unmapped = sum(1 for r in rows if not r.module)
    notes = ["benchmark_model reports per-op means, not per-run samples: row median = avg ms × times called; "
             "total p10/p90 = mean ∓ 1.28·std clipped to [min, max]"]
    if unmapped:
        notes.append(f"{unmapped} of {len(rows)} rows could not be mapped to a module (names are not litert-torch "
                     "locations and op indices do not match the artifact's op table)")
    manifest = request.manifest
    profile = Profile(
        model=request.label or model.stem,
        format="tflite",
        device=request.device.name,
        runner=runner,
        obtained="measured",
        total_ms=_total_stats(parsed.total),
        layers=rows,
        artifact_sha256=manifest.sha256 if manifest else "",
        input_shapes=[t.shape for t in table.inputs] if table else [],
        environment={**environment, "layout": parsed.layout, "init_ms": parsed.init_ms,
                     "host_ai_edge_litert": version_of("ai-edge-litert")},
        method=("TFLite benchmark_model --enable_op_profiling=true (operator-wise 'Run Order' table); modules from "
                "litert-torch tensor names, the artifact's op table by op index, and in-order alignment of XNNPACK ops"),
        notes=notes,
    )
    profile.fill_shares()
    profile.extra.update({"layer_sum_ms": round(profile.layer_sum_ms(), 4),
                          "coverage": round(profile.layer_sum_ms() / profile.total_ms.median, 4)
                          if profile.total_ms.median else None,
                          "nodes_executed": parsed.nodes_executed, "root_module": modpath.ROOT})
    return profile
