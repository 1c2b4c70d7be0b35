"""Qualcomm AI Hub: real Snapdragon phones behind the maintained ``qai-hub`` client, as a runner.

How a run goes (every call is the ``qai_hub`` client's own; nothing here speaks HTTP)::

    client = qai_hub.Client(config)                     # token: $QAI_HUB_API_TOKEN or ~/.qai_hub/client.ini
    job = client.submit_inference_job(artifact, qai_hub.Device(name), profile=True,
                                      options="--compute_unit cpu --max_profiler_iterations N")
    job.get_status()                                    # polled until SUCCESS / FAILED / our timeout
    job.download_profile()                              # {"execution_summary": ..., "execution_detail": [...]}

``submit_inference_job(profile=True)`` is the client's replacement for the deprecated
``submit_profile_job``; it uploads the ``.tflite`` (or ``.onnx``) ``convert`` wrote, unchanged.

Rules:

* Device: option ``qai_hub_device``, else the profile's ``match.qai_hub_devices[0]`` (an AI Hub device
  name, ``qai-hub list-devices``), else any AI Hub device with the profile's ``match.soc_models`` chipset
  (``chipset:sm8550``). The device AI Hub picked is recorded (``device_model``, ``soc``).
* Compute unit: option ``qai_hub_compute_unit``, else ``android_delegate``, else ``protocol.delegate``
  (``cpu``, ``gpu``, ``nnapi``→``npu``, ``npu``, ``all``); iterations = ``runs``. AI Hub has no
  warm-up or thread-count option: those request fields are not applied (said in ``notes``).
* Samples: ``all_inference_times`` (µs) of the timed iterations, as AI Hub reports them, in ms. Per-layer
  rows: ``execution_detail`` of the one extra profiled iteration, each with the compute unit the runtime
  placed it on; modules from the artifact's op table (by op name, then by position when the op types
  line up), else from litert-torch tensor names.
* ``availability`` is fast: installed client, token, and a TCP connect to the API host (≤ 2 s, cached
  per process); whether the device exists is only known when a job is submitted.
* Timeouts: ``qai_hub_timeout`` option or ``$HYBRIDEXPORT_QAI_HUB_TIMEOUT`` (s, default 3600); polling
  every ``qai_hub_poll`` option or ``$HYBRIDEXPORT_QAI_HUB_POLL`` s (default 10). A job that times out
  keeps running on the farm.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hybridexport.bench.profile import REBENCH, LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.bench.runners._common import artifact, have_module, ticker, version_of
from hybridexport.errors import HybridExportError, InputFileError, RunnerUnavailableError, shown

TOKEN_ENV = "QAI_HUB_API_TOKEN"
TIMEOUT_ENV = "HYBRIDEXPORT_QAI_HUB_TIMEOUT"
POLL_ENV = "HYBRIDEXPORT_QAI_HUB_POLL"
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_POLL_S = 10.0
PROBE_TIMEOUT_S = 2.0
PROBE_CACHE_S = 60.0
COMPUTE_UNITS = {"cpu": "cpu", "gpu": "gpu", "nnapi": "npu", "npu": "npu", "all": "all"}
RUNTIMES = {"tflite": "TFLite (LiteRT) on Qualcomm AI Hub", "onnx": "ONNX Runtime on Qualcomm AI Hub"}
INSTALL_HINT = ("pip install --no-deps qai-hub==0.56.0 backoff==2.2.1 deprecation==2.1.0 h5py==3.16.0 "
                "prettytable==3.18.0 wcwidth==0.9.4 requests-toolbelt==1.0.0 s3transfer==0.13.1 botocore==1.44.8 "
                "jmespath==1.1.0 semver==3.1.2 (no-deps: its protobuf<=6.31.1 pin conflicts with onnx's protobuf 7)")
TOKEN_HINT = f"run `qai-hub configure --api_token TOKEN` once (writes ~/.qai_hub/client.ini) or set ${TOKEN_ENV}"


class FarmJobError(HybridExportError):
    """A device-farm job that could not be submitted, failed on the farm, or returned no profile."""


class FarmTimeoutError(FarmJobError):
    """A device-farm job that did not finish within the timeout (it keeps running on the farm)."""


# ----------------------------------------------------------------------------- configuration


def _client_module() -> Any:
    import qai_hub

    return qai_hub


def hub_config() -> Any:
    """The client's ``ClientConfig``: ``$QAI_HUB_API_TOKEN`` (default URLs), else the client's ini file.

    Raises RunnerUnavailableError naming how to configure a token when there is none.
    """
    hub = _client_module()
    from qai_hub import api_utils

    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return hub.ClientConfig(api_token=token, verbose=False)
    path = api_utils.get_config_path()
    if not Path(path).is_file():
        raise RunnerUnavailableError(f"no Qualcomm AI Hub API token (no {path}, ${TOKEN_ENV} unset): {TOKEN_HINT}")
    try:
        cfg = api_utils.load_api_config_from_file(path)
    except Exception as exc:  # noqa: BLE001 - the client raises APIException or configparser errors
        raise RunnerUnavailableError(f"{path} is not a usable AI Hub client config ({_one_line(exc)}); {TOKEN_HINT}") from None
    if not str(cfg.api_token).strip():
        raise RunnerUnavailableError(f"{path} has an empty api_token; {TOKEN_HINT}")
    cfg.verbose = False  # progress is ours; the client would print bars and banners to stdout
    return cfg


_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, int], tuple[float, str]] = {}


def reachable(api_url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """``""`` when a TCP connection to the API host opens within ``timeout`` s, else why not.

    Name resolution runs in a helper thread so a resolver without network cannot stall the caller;
    answers are cached for a minute per host, so ``hybridexport devices`` probes each host once.
    """
    u = urlparse(api_url)
    host = u.hostname or ""
    port = u.port or (80 if u.scheme == "http" else 443)
    key = (host, port)
    with _probe_lock:
        hit = _probe_cache.get(key)
        if hit and time.monotonic() - hit[0] < PROBE_CACHE_S:
            return hit[1]
    result: list[str] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append("")
        except OSError as exc:
            result.append(exc.strerror or type(exc).__name__)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    why = result[0] if result else f"no answer within {timeout:.0f} s"
    msg = f"cannot reach Qualcomm AI Hub at {host}:{port} ({why}); check the network or proxy" if why else ""
    with _probe_lock:
        _probe_cache[key] = (time.monotonic(), msg)
    return msg


def hub_device(device: Any, options: dict[str, Any]) -> tuple[str, list[str]]:
    """(AI Hub device name, attributes) to submit to; ``("", [])`` when the profile names neither."""
    name = str(options.get("qai_hub_device") or "").strip()
    if name:
        return name, []
    names = (device.match or {}).get("qai_hub_devices") or []
    if names:
        return str(names[0]), []
    socs = [s for s in (device.match or {}).get("soc_models", []) if re.fullmatch(r"(?i)sm\d{4}", str(s))]
    if socs:
        return "", [f"chipset:{socs[0].lower()}"]
    return "", []


def compute_unit(device: Any, options: dict[str, Any]) -> str:
    """The ``--compute_unit`` value for this request (see the module docstring)."""
    raw = str(options.get("qai_hub_compute_unit") or options.get("android_delegate")
              or device.protocol.get("delegate", "cpu")).strip().lower()
    units = [COMPUTE_UNITS.get(u.strip(), "") for u in raw.split(",")]
    if not raw or not all(units):
        raise RunnerUnavailableError(f"compute unit '{raw}' is not one AI Hub knows; use cpu, gpu, npu or all "
                                     "(or a list such as npu,cpu)")
    return ",".join(dict.fromkeys(units))


def _one_line(exc: BaseException | str) -> str:
    """The client's message on one line: its boxed hints unboxed, whitespace collapsed."""
    text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    text = re.sub(r"[┌┐└┘─│|]", " ", text)
    return " ".join(text.split())


# ----------------------------------------------------------------------------- runner


class QaiHubRunner(Runner):
    """Profile jobs on Qualcomm AI Hub's hosted phones (see the module docstring)."""

    name = "qai-hub"
    formats = ("tflite", "onnx")

    def availability(self, device: Any) -> tuple[bool, str]:
        if device.kind != "android":
            return False, f"serves Android devices on Qualcomm AI Hub only ('{device.name}' is {device.kind})"
        name, attrs = hub_device(device, self.options)
        if not name and not attrs:
            return False, (f"no AI Hub device for '{device.name}': add match.qai_hub_devices (a name `qai-hub "
                           f"list-devices` prints) to profiles/{device.name}.json")
        if not have_module("qai_hub"):
            return False, f"the qai-hub client is not installed ({INSTALL_HINT})"
        try:
            cfg = hub_config()
        except RunnerUnavailableError as exc:
            return False, str(exc)
        why = reachable(cfg.api_url)
        return (False, why) if why else (True, "")

    def run(self, request: BenchRequest) -> Profile:
        self.configure({**self.options, **request.options})
        opts, device = self.options, request.device
        ok, why = self.availability(device)
        if not ok:
            raise RunnerUnavailableError(f"runner 'qai-hub' cannot serve device '{device.name}': {why}")
        fmt = request.manifest.format if request.manifest is not None and request.manifest.format in self.formats \
            else "tflite"
        path = artifact(request, fmt)
        unit = compute_unit(device, opts)
        timeout = _positive(opts.get("qai_hub_timeout") or os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S,
                            f"qai_hub_timeout / ${TIMEOUT_ENV}")
        poll = _positive(opts.get("qai_hub_poll", os.environ.get(POLL_ENV, DEFAULT_POLL_S)),
                         f"qai_hub_poll / ${POLL_ENV}", allow_zero=True)
        extra = shlex.split(str(opts.get("qai_hub_options") or ""))
        flags = shlex.join(["--compute_unit", unit, "--max_profiler_iterations", str(request.runs), *extra])
        name, attrs = hub_device(device, opts)
        hub = _client_module()
        client = hub.Client(config=hub_config())
        target = hub.Device(name=name, attributes=attrs)
        label = f"'{name}'" if name else f"with {', '.join(attrs)}"
        job = None
        try:
            job = client.submit_inference_job(
                model=str(path), device=target, profile=True, options=flags,
                name=f"hybridexport {request.label or path.stem} {fmt}",
            )
            status = self._wait(job, timeout, poll, ticker(request), request.runs + request.warmup)
            if not status.success:
                raise FarmJobError(f"AI Hub job {job.job_id} on {label} failed: "
                                   f"{_one_line(status.message or 'no reason given')} ({job.url})")
            hub_profile = job.download_profile()
            fresh = client.get_job(job.job_id)
        except HybridExportError:
            raise
        except hub.UserError as exc:
            msg = _one_line(exc)
            if not (re.search(r"is not available\.?$", msg) or "No devices match" in msg):
                raise FarmJobError(f"AI Hub refused the job for {label}: {msg}") from None
            fix = ("use a name `qai-hub list-devices` prints" if opts.get("qai_hub_device") else
                   f"put a name `qai-hub list-devices` prints in match.qai_hub_devices of profiles/{device.name}.json")
            where = "the qai_hub_device option" if opts.get("qai_hub_device") else f"device profile '{device.name}'"
            raise FarmJobError(f"Qualcomm AI Hub has no device {label} ({where}): {fix}") from None
        except Exception as exc:  # noqa: BLE001 - client/transport failures become one line with the job id
            where = f"job {job.job_id}" if job is not None else "job submission"
            raise FarmJobError(f"AI Hub {where} for {label} failed: {_one_line(exc)}") from None
        if not hub_profile or not hub_profile.get("execution_summary"):
            raise FarmJobError(f"AI Hub job {job.job_id} succeeded but returned no profile ({job.url})")
        dev = getattr(fresh, "device", None) or getattr(job, "device", None)
        info = {
            "device_model": getattr(dev, "name", "") or name,
            "soc": chipset(getattr(dev, "attributes", []) or attrs),
            "os": getattr(dev, "os", ""),
            "qai_hub_device_attributes": list(getattr(dev, "attributes", []) or []),
            "qai_hub_job_id": job.job_id,
            "qai_hub_job_url": job.url,
            "hub_version": getattr(fresh, "hub_version", "") or "",
            "qai_hub_client": version_of("qai-hub"),
            "runtime": RUNTIMES[fmt],
            "compute_unit": unit,
            "profile_options": flags,
            "iterations": request.runs,
        }
        return profile_from_hub(hub_profile, request, fmt, runner=self.name, environment=info)

    @staticmethod
    def _wait(job: Any, timeout: float, poll: float, tick: Callable[[int], None] | None, steps: int) -> Any:
        """Poll ``job`` until it finishes; advance ``tick`` as it passes through its states."""
        t0, seen, done = time.monotonic(), [], 0
        while True:
            status = job.get_status()
            if status.state not in seen:
                seen.append(status.state)
                if tick and not status.finished:
                    step = max(1, steps // 4)
                    tick(step)
                    done += step
            if status.finished:
                if tick and done < steps:
                    tick(steps - done)
                return status
            waited = time.monotonic() - t0
            if waited >= timeout:
                raise FarmTimeoutError(
                    f"AI Hub job {job.job_id} did not finish within {timeout:g} s (last state {status.code}); it keeps "
                    f"running on the farm ({job.url}); allow longer with ${TIMEOUT_ENV} or the qai_hub_timeout option")
            time.sleep(min(poll, max(0.0, timeout - waited)))


def _positive(value: Any, what: str, allow_zero: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = -1.0
    if x < 0 or (x == 0 and not allow_zero):
        raise RunnerUnavailableError(f"{what} must be a positive number of seconds, got {value!r}")
    return x


def chipset(attributes: list[str]) -> str:
    """The marketing chipset attribute (``qualcomm-snapdragon-8gen3``), else the part number (``sm8650``)."""
    chips = [a.split(":", 1)[1] for a in attributes if a.startswith("chipset:")]
    named = [c for c in chips if not re.fullmatch(r"(?i)sm\d{4}", c)]
    return (named or chips or [""])[0]


# ----------------------------------------------------------------------------- profile mapping


def _layer_modules(detail: list[dict[str, Any]], table: Any, known: set[str] | None) -> list[tuple[str, str]]:
    """(module, module_source) per ``execution_detail`` row (see the module docstring)."""
    from hybridexport.modpath import from_litert_name

    by_name: dict[str, Any] = {}
    positional = False
    if table is not None:
        for op in table.ops:
            by_name.setdefault(op.name, op)
            tail = op.name.split(":", 1)[1] if re.match(r"^\d+:", op.name) else ""
            if tail:
                by_name.setdefault(tail, op)
        positional = len(table.ops) == len(detail) and all(
            str(d.get("type", "")) == op.op_type for d, op in zip(detail, table.ops))
    out = []
    for i, d in enumerate(detail):
        name = str(d.get("name", ""))
        op = by_name.get(name) or (table.ops[i] if positional else None)
        if op is not None and op.module:
            out.append((op.module, "op_table"))
            continue
        mod = from_litert_name(name, known)
        out.append((mod, "metadata") if mod else ("", ""))
    return out


def profile_from_hub(hub_profile: dict[str, Any], request: BenchRequest, fmt: str, runner: str,
                     environment: dict[str, Any]) -> Profile:
    """A Profile from one ``job.download_profile()`` dict (times in µs there, in ms here).

    The dict is checked as outside data: ``execution_summary`` an object, ``execution_detail`` a list of
    objects whose name, type and compute unit are text; every time a finite number ≥ 0 (or absent); the
    Profile built passes :meth:`Profile.from_dict`'s checks. Anything else is one FarmJobError line."""
    job = f"AI Hub job {environment.get('qai_hub_job_id', '?')}"
    summary = hub_profile.get("execution_summary") or {} if isinstance(hub_profile, dict) else None
    detail = hub_profile.get("execution_detail") or [] if isinstance(hub_profile, dict) else None
    if not isinstance(summary, dict) or not isinstance(detail, list) or not all(isinstance(d, dict) for d in detail):
        raise FarmJobError(f"{job} returned a profile that is not {{execution_summary: {{...}}, execution_detail: "
                           "[{...}, ...]}; open it on the AI Hub website")
    notes: list[str] = []
    times = summary.get("all_inference_times") or []
    if not isinstance(times, list | tuple):
        raise FarmJobError(f"{job}: execution_summary.all_inference_times is not a list; open it on the AI Hub website")
    samples = [_us(t, f"{job}: all_inference_times[{i}]") / 1000.0 for i, t in enumerate(times) if t is not None]
    estimated = summary.get("estimated_inference_time")
    if estimated is not None:
        _us(estimated, f"{job}: estimated_inference_time")
    if samples:
        total = Stats.from_samples(samples)
    elif isinstance(estimated, (int, float)) and estimated > 0:
        total = Stats.point(float(estimated) / 1000.0)
        notes.append("AI Hub returned no per-iteration times (all_inference_times): the total is its single estimate")
    else:
        raise FarmJobError(f"AI Hub job {environment.get('qai_hub_job_id', '?')} returned a profile without inference "
                           "times; open it on the AI Hub website")
    known = {n for n, _ in request.model.module.named_modules()} if request.model is not None else None
    table = request.op_table()
    modules = _layer_modules(detail, table, known)
    rows, untimed = [], 0
    for i, (d, (mod, source)) in enumerate(zip(detail, modules)):
        t = d.get("execution_time")
        if t is not None:
            ms = Stats.from_samples([_us(t, f"{job}: execution_detail[{i}].execution_time") / 1000.0])
        else:
            untimed += 1
            ms = Stats(median=0.0, p10=0.0, p90=0.0, n=0)
        name, op_type, unit = (_text(d, k, f"{job}: execution_detail[{i}]") for k in ("name", "type", "compute_unit"))
        rows.append(LayerRow(name=name, op_type=op_type, module=mod, compute_unit=unit.lower(), ms=ms,
                             module_source=source))
    units: dict[str, int] = {}
    for r in rows:
        units[r.compute_unit] = units.get(r.compute_unit, 0) + 1
    memory = {stage: list(rng) for stage in ("inference", "first_load", "warm_load", "compile")
              if isinstance(rng := summary.get(f"{stage}_memory_peak_range"), (list, tuple)) and len(rng) == 2}
    unmapped = sum(1 for r in rows if not r.module)
    notes.append(f"end-to-end: {total.n} timed iterations as AI Hub reports them (the first ones include cold "
                 "start); per-layer: one extra profiled iteration, one sample per row")
    notes.append(f"AI Hub sets neither warm-up nor threads: warmup={request.warmup} and threads={request.threads} "
                 "were not applied")
    if untimed:
        notes.append(f"{untimed} of {len(rows)} rows carry no execution_time (0 ms here)")
    if unmapped:
        notes.append(f"{unmapped} of {len(rows)} rows could not be mapped to a module (no op table entry and not "
                     "litert-torch tensor names)")
    via = "the artifact's op table" if table is not None else "litert-torch tensor names"
    manifest = request.manifest
    profile = Profile(
        model=request.label,
        format=fmt,
        device=request.device.name,
        runner=runner,
        obtained="measured",
        total_ms=total,
        layers=rows,
        artifact_sha256=manifest.sha256 if manifest else "",
        environment=environment,
        method=("Qualcomm AI Hub profile job (submit_inference_job(profile=True)): end-to-end times from "
                "execution_summary.all_inference_times, per-layer times and compute units from execution_detail "
                f"of its profiled iteration; modules from {via}"),
        notes=notes,
    )
    profile.fill_shares()
    profile.extra.update({
        "layer_sum_ms": round(profile.layer_sum_ms(), 4),
        "coverage": round(profile.layer_sum_ms() / total.median, 4) if total.median else None,
        "estimated_inference_ms": float(estimated) / 1000.0 if isinstance(estimated, (int, float)) else None,
        "peak_memory_bytes": summary.get("estimated_inference_peak_memory"),
        "memory_peak_range_bytes": memory,
        "first_load_ms": _ms(summary.get("first_load_time")),
        "warm_load_ms": _ms(summary.get("warm_load_time")),
        "compute_unit_counts": units,
    })
    try:  # the same checks as a Profile read from a file (a total > 0, at least one layer, ...)
        return Profile.from_dict(profile.to_dict(), source=job)
    except InputFileError as exc:
        raise FarmJobError(f"{exc}".replace(REBENCH, "open it on the AI Hub website")) from None


def _ms(us: Any) -> float | None:
    """µs → ms when ``us`` is a finite time ≥ 0 (a figure for ``extra``; anything else is None)."""
    if isinstance(us, bool) or not isinstance(us, int | float) or not 0 <= us < math.inf:
        return None
    try:
        return float(us) / 1000.0
    except OverflowError:  # an integer beyond float range
        return None


def _us(value: Any, what: str) -> float:
    """A time from the profile (µs): a finite number ≥ 0, else FarmJobError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise FarmJobError(f"{what} is {shown(value, 40)}, not a time ≥ 0 in µs; open the job on the AI Hub website")
    try:
        return float(value)
    except OverflowError:
        raise FarmJobError(f"{what} is too large for a time in µs; open the job on the AI Hub website") from None


def _text(d: dict[str, Any], key: str, where: str) -> str:
    """A layer's name, type or compute unit: text, absent (or null) as ""."""
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FarmJobError(f"{where}.{key} is {shown(value, 40)}, not text; open the job on the AI Hub website")
    return value
