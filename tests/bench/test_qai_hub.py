"""The ``qai-hub`` runner and farm concurrency, through the real ``qai_hub`` client.

Only the transport is replaced: ``requests.adapters.HTTPAdapter.send``, through which every request of
the client goes. :class:`FakeHub` answers those requests as AI Hub's REST API does (protobuf bodies
of ``qai_hub.public_api_pb2``), replaying ``tests/data/qai_hub/`` (see its README). The availability
probe really connects: the fixture's config points the client at a listening socket on loopback.
"""

from __future__ import annotations

import configparser
import json
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from hybridexport.bench.devices import load_device
from hybridexport.bench.farm import run_many
from hybridexport.bench.profile import Profile, Stats
from hybridexport.bench.runners import BenchRequest, get_runner
from hybridexport.bench.runners import qai_hub as qh
from hybridexport.errors import InputFileError, RunnerUnavailableError
from hybridexport.export.manifest import Manifest, Parity, artifact_path, manifest_path

DATA = Path(__file__).resolve().parents[1] / "data" / "qai_hub"
TINYNET = Path(__file__).resolve().parents[1] / "data" / "bench" / "tinynet.tflite"


def _pb():
    return pytest.importorskip("qai_hub.public_api_pb2", reason="the qai-hub client is not installed (see README)")


class FakeHub:
    """AI Hub's REST API, as far as profile jobs go, answering the client's real requests."""

    STATES = ("JOB_STATE_CREATED", "JOB_STATE_PROVISIONING_DEVICE", "JOB_STATE_MEASURING_PERFORMANCE")

    def __init__(self, base: str, profile: str = "profile_detail_tinynet_synthesized.json") -> None:
        from google.protobuf import json_format

        self.pb, self.base, self.jf = _pb(), base, json_format
        self.devices = json.loads((DATA / "devices.json").read_text())["devices"]
        self.profile = json.loads((DATA / profile).read_text())
        self.fail: dict[tuple[str, str], str] = {}  # (job-name substring, device) -> failure reason
        self.hang: set[str] = set()  # devices whose jobs never finish
        self.hold_until = 0  # jobs finish only once this many were created
        self.lock = threading.Lock()
        self.models: dict[str, str] = {}
        self.uploads: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.in_flight = self.max_in_flight = 0

    # -- transport ------------------------------------------------------------------------------
    def send(self, adapter, request, **_kw):
        import requests
        from requests.structures import CaseInsensitiveDict

        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        body = body.encode() if isinstance(body, str) else (body or b"")
        url = urlparse(request.url)
        if url.path.startswith("/api/") and request.headers.get("Authorization") != "token test-token":
            code, payload, headers = 401, b'{"detail": "Invalid token."}', {"Content-Type": "application/json"}
        else:
            code, payload, headers = self.route(request.method, url, body)
        r = requests.Response()
        r.status_code, r.url, r.request, r.reason = code, request.url, request, "OK" if code < 400 else "Error"
        r._content = payload.SerializeToString() if hasattr(payload, "SerializeToString") else payload
        r.headers = CaseInsensitiveDict({"Content-Type": "application/x-protobuf", **headers})
        return r

    def route(self, method: str, url, body: bytes):
        pb, path = self.pb, url.path.rstrip("/")
        q = parse_qs(url.query)
        parts = path.split("/")
        with self.lock:
            if path == "/api/v1/devices" and method == "GET":
                name, attrs = (q.get("name") or [""])[0], q.get("attributes", [])
                found = [d for d in self.devices if (not name or d["name"] == name) and set(attrs) <= set(d["attributes"])]
                return 200, pb.DeviceList(devices=[pb.Device(**d) for d in found[:1]], total_query_count=len(found)), {}
            if path == "/api/v1/models" and method == "POST":
                mid = f"m{len(self.models) + 1:04d}"
                self.models[mid] = pb.Model.FromString(body).name
                return 200, pb.CreateUpdateResponse(id=mid), {}
            if parts[:4] == ["", "api", "v1", "models"] and parts[-1] == "multipart_upload":
                mid = parts[4]
                if method == "GET":
                    urls = pb.FileMultipartUploadURL(urls=[f"{self.base}/upload/{mid}"], upload_id=f"u-{mid}",
                                                     max_part_size=1 << 30)
                    return 200, pb.FileUploadResponse(multipart_url=urls), {}
                return 200, pb.CreateUpdateResponse(id=mid), {}
            if parts[:2] == ["", "upload"] and method == "PUT":
                self.uploads[parts[2]] = body
                return 200, b"", {"ETag": f'"etag-{parts[2]}"'}
            if path == "/api/v1/jobs" and method == "POST":
                job = pb.Job.FromString(body).inference_job
                jid = f"j{len(self.jobs) + 1:04d}"
                device = next(d for d in self.devices if d["name"] == job.device.name)
                self.jobs[jid] = {"pb": job, "device": device, "polls": 0, "final": False}
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                return 200, pb.CreateUpdateResponse(id=jid), {}
            if parts[:4] == ["", "api", "v1", "jobs"] and len(parts) == 5 and method == "GET":
                return 200, pb.Job(inference_job=self._state(parts[4]), hub_version="aihub-2026.10.1-synthesized"), {}
            if parts[:4] == ["", "api", "v1", "jobs"] and parts[-1] == "result":
                detail = self.jf.ParseDict(self.profile, pb.ProfileDetail())
                res = pb.InferenceJobResult(inference_job_id=parts[4], detail=detail)
                return 200, pb.JobResult(inference_job_result=res), {}
        return 404, b'{"detail": "not found"}', {"Content-Type": "application/json"}

    def _state(self, jid: str):
        j, pb = self.jobs[jid], self.pb
        j["polls"] += 1
        job = pb.InferenceJob()
        job.CopyFrom(j["pb"])
        job.inference_job_id = jid
        job.device.CopyFrom(pb.Device(**j["device"]))
        reason = next((r for (n, dev), r in self.fail.items() if n in job.name and dev == job.device.name), None)
        ready = j["polls"] > len(self.STATES) and len(self.jobs) >= self.hold_until
        if ready and job.device.name not in self.hang:
            job.job_state = pb.JOB_STATE_FAILED if reason else pb.JOB_STATE_DONE
            job.failure_reason = reason or ""
            if not j["final"]:
                j["final"] = True
                self.in_flight -= 1
        else:
            job.job_state = getattr(pb, self.STATES[min(j["polls"], len(self.STATES)) - 1])
        return job


@pytest.fixture
def farm(tmp_path, monkeypatch):
    """A fake AI Hub behind a real client config (client.ini) pointing at a listening loopback socket."""
    pytest.importorskip("qai_hub", reason="the qai-hub client is not installed (see README)")
    import requests.adapters

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    ini = tmp_path / "client.ini"
    cfg = configparser.ConfigParser()
    cfg["api"] = {"api_token": "test-token", "api_url": base, "web_url": base, "verbose": "False"}
    with ini.open("w") as f:
        cfg.write(f)
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(ini))
    monkeypatch.delenv(qh.TOKEN_ENV, raising=False)
    monkeypatch.setattr(qh, "_probe_cache", {})
    hub = FakeHub(base)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda self, request, **kw: hub.send(self, request, **kw))
    yield hub
    listener.close()


def _manifest(path: Path, model: str = "tinynet") -> Manifest:
    from hybridexport.export.cache import sha256_path

    return Manifest(model=model, resolution=32, format="tflite", precision="fp32", path=str(path),
                    size_bytes=path.stat().st_size, sha256=sha256_path(path), versions={}, passes=[],
                    parity=Parity(verified=False), ops={}, rank5_tensors=0, seconds=0.0)


def _request(device: str = "galaxy-s24", path: Path = TINYNET, runs: int = 20, **options) -> BenchRequest:
    return BenchRequest(device=load_device(device), manifest=_manifest(path), runs=runs, warmup=0,
                        options={"qai_hub_poll": 0.0, **options})


# ----------------------------------------------------------------------------- profiles


def test_recorded_profile_through_the_real_client(farm):
    import qai_hub

    farm.profile = json.loads((DATA / "profile_detail_qai_hub_test_client.json").read_text())
    p = get_runner("qai-hub").run(_request(runs=2))
    # the client turned the served protobuf into the dict its own test records
    job = qai_hub.Client(config=qh.hub_config()).get_job(p.environment["qai_hub_job_id"])
    got = json.loads(json.dumps(job.download_profile()))
    assert got == json.loads((DATA / "download_profile_qai_hub_test_client.json").read_text())
    assert p.obtained == "measured" and p.runner == "qai-hub" and p.format == "tflite"
    assert p.total_ms.samples == [10.003, 4.205] and p.total_ms.n == 2
    assert [(r.op_type, r.compute_unit, r.ms.median, r.module) for r in p.layers] == [
        ("MUL", "cpu", 0.023, ""), ("TRANSPOSE", "npu", 0.127, "")]
    assert p.extra["peak_memory_bytes"] == 166711296
    assert p.extra["memory_peak_range_bytes"]["inference"] == [2654208, 39406752]
    assert p.extra["first_load_ms"] == 1374.293
    env = p.environment
    assert env["device_model"] == "Samsung Galaxy S24 (Family)" and env["soc"] == "qualcomm-snapdragon-8gen3"
    assert env["hub_version"] == "aihub-2026.10.1-synthesized" and env["qai_hub_client"] == "0.56.0"
    assert env["profile_options"] == "--compute_unit all --max_profiler_iterations 2"
    assert "load_average" not in env  # the host's load says nothing about the farm's phone
    # what went over the wire: the artifact itself, to the profile's device, with those options
    (jid, job_rec), = farm.jobs.items()
    assert job_rec["pb"].options == env["profile_options"] and job_rec["pb"].is_profiling_on
    assert job_rec["pb"].device.name == "Samsung Galaxy S24 (Family)"
    assert list(farm.uploads.values()) == [TINYNET.read_bytes()]


def _known() -> set[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tinynet", TINYNET.with_name("tinynet.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {n or "<root>" for n, _ in mod.build().named_modules()}


def test_synthesized_tinynet_rows_map_through_the_op_table(farm):
    p = get_runner("qai-hub").run(_request(device="snapdragon-8-elite-qrd", android_delegate="nnapi"))
    assert len(p.total_ms.samples) == 20 and p.total_ms.median == pytest.approx(0.1845)
    mods = [(r.module, r.module_source) for r in p.layers]
    # without a table beside it the artifact's op table is read from the file: every row maps through it
    assert mods[1] == ("stem", "op_table") and mods[3] == ("body", "op_table") and mods[9] == ("head", "op_table")
    assert mods[10] == ("head", "op_table")  # a signature output: the op table's row inherits its input's module
    assert p.extra["compute_unit_counts"] == {"npu": 8, "gpu": 1, "cpu": 2}
    assert p.environment["compute_unit"] == "npu" and p.environment["soc"] == "qualcomm-snapdragon-8-elite"
    assert not any("could not be mapped" in n for n in p.notes)
    assert p.by_module(1)[0].module == "stem"


def test_op_table_maps_every_row(farm, tmp_path):
    from hybridexport.export.formats import get
    from hybridexport.export.formats.base import TableHints
    from hybridexport.optable import op_table_path

    art = tmp_path / "tinynet.fp32.tflite"
    shutil.copy(TINYNET, art)
    table = get("tflite").op_table(art, TableHints(known_modules=_known()))
    table.save(op_table_path(art))
    p = get_runner("qai-hub").run(_request(path=art))
    assert {r.module_source for r in p.layers} == {"op_table"}
    assert [r.module for r in p.layers] == [o.module for o in table.ops] and p.layers[10].module == "head"
    assert "op table" in p.method


# ----------------------------------------------------------------------------- failure states (exact messages)


def test_no_token(monkeypatch, tmp_path):
    pytest.importorskip("qai_hub", reason="the qai-hub client is not installed (see README)")
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(tmp_path / "none.ini"))
    monkeypatch.delenv(qh.TOKEN_ENV, raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("no token: nothing to connect to"))
    ok, why = get_runner("qai-hub").availability(load_device("galaxy-s24"))
    assert (ok, why) == (False, f"no Qualcomm AI Hub API token (no {tmp_path / 'none.ini'}, $QAI_HUB_API_TOKEN unset): "
                                "run `qai-hub configure --api_token TOKEN` once (writes ~/.qai_hub/client.ini) or set "
                                "$QAI_HUB_API_TOKEN")
    with pytest.raises(RunnerUnavailableError, match="^runner 'qai-hub' cannot serve device 'galaxy-s24': no Qualcomm"):
        get_runner("qai-hub").run(_request())


def test_no_network(farm, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there any more: the connection is refused at once
    monkeypatch.setenv(qh.TOKEN_ENV, "test-token")
    monkeypatch.setattr(qh, "hub_config", lambda: qh._client_module().ClientConfig(
        api_token="t", api_url=f"http://127.0.0.1:{port}", web_url=f"http://127.0.0.1:{port}"))
    timeouts = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda addr, timeout=None, **k: timeouts.append(timeout) or real(addr, timeout=timeout, **k))
    ok, why = get_runner("qai-hub").availability(load_device("galaxy-s25"))
    assert timeouts and all(t is not None and t <= 2.0 for t in timeouts)  # one bounded probe, never the default
    assert (ok, why) == (False, f"cannot reach Qualcomm AI Hub at 127.0.0.1:{port} (Connection refused); check the "
                                "network or proxy")
    assert not farm.jobs


def test_job_failed(farm):
    farm.fail[("tinynet", "Samsung Galaxy S24 (Family)")] = "Failed to profile the model: tflite runtime error"
    with pytest.raises(qh.FarmJobError) as e:
        get_runner("qai-hub").run(_request())
    base = farm.base
    assert str(e.value) == ("AI Hub job j0001 on 'Samsung Galaxy S24 (Family)' failed: Failed to profile the model: "
                            f"tflite runtime error ({base}/jobs/j0001/)")


def test_rejected_token(farm, tmp_path, monkeypatch):
    monkeypatch.setenv(qh.TOKEN_ENV, "expired")  # the environment's token wins over client.ini
    monkeypatch.setattr(qh, "reachable", lambda url: "")  # the default API host: its probe is not under test here
    with pytest.raises(qh.FarmJobError) as e:
        get_runner("qai-hub").run(_request())
    assert str(e.value).startswith("AI Hub refused the job for 'Samsung Galaxy S24 (Family)': Failed to authenticate. "
                                   "Failure to authenticate is likely caused by a bad or expired API token.")
    assert "\n" not in str(e.value) and not farm.jobs


def test_timeout(farm):
    farm.hang.add("Samsung Galaxy S24 (Family)")
    with pytest.raises(qh.FarmTimeoutError) as e:
        get_runner("qai-hub").run(_request(qai_hub_timeout=0.3, qai_hub_poll=0.02))
    assert str(e.value) == ("AI Hub job j0001 did not finish within 0.3 s (last state MEASURING_PERFORMANCE); it keeps "
                            f"running on the farm ({farm.base}/jobs/j0001/); allow longer with "
                            "$HYBRIDEXPORT_QAI_HUB_TIMEOUT or the qai_hub_timeout option")


def test_unknown_device(farm):
    farm.devices = [d for d in farm.devices if "S24" not in d["name"]]
    with pytest.raises(qh.FarmJobError) as e:
        get_runner("qai-hub").run(_request())
    assert str(e.value) == ("Qualcomm AI Hub has no device 'Samsung Galaxy S24 (Family)' (device profile 'galaxy-s24'): "
                            "put a name `qai-hub list-devices` prints in match.qai_hub_devices of profiles/galaxy-s24.json")
    assert not farm.jobs and not farm.uploads  # refused before anything was uploaded
    with pytest.raises(qh.FarmJobError, match=r"^Qualcomm AI Hub has no device 'Pixel 99' \(the qai_hub_device option"):
        get_runner("qai-hub").run(_request(qai_hub_device="Pixel 99"))


def test_profile_without_farm_device_and_bad_options(monkeypatch):
    r = get_runner("qai-hub")
    assert r.availability(load_device("pixel8")) == (
        False, "no AI Hub device for 'pixel8': add match.qai_hub_devices (a name `qai-hub list-devices` prints) to "
               "profiles/pixel8.json")
    assert r.availability(load_device("host"))[1] == "serves Android devices on Qualcomm AI Hub only ('host' is host)"
    assert qh.hub_device(load_device("galaxy-s23"), {}) == ("", ["chipset:sm8550"])  # its chipset, by attribute
    with pytest.raises(RunnerUnavailableError, match="^compute unit 'dsp' is not one AI Hub knows"):
        qh.compute_unit(load_device("galaxy-s24"), {"qai_hub_compute_unit": "dsp"})
    monkeypatch.setattr(qh, "have_module", lambda name: False)
    ok, why = r.availability(load_device("galaxy-s24"))
    assert not ok and why.startswith("the qai-hub client is not installed (pip install --no-deps qai-hub==0.56.0 ")


def test_devices_report_shows_farm_state_fast(monkeypatch, tmp_path):
    pytest.importorskip("qai_hub", reason="the qai-hub client is not installed (see README)")
    from hybridexport.bench.devices_command import device_report

    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(tmp_path / "none.ini"))
    monkeypatch.delenv(qh.TOKEN_ENV, raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("no token: no network probe"))
    report = {d["name"]: d for d in device_report()}
    s24 = report["galaxy-s24"]["runners"]
    assert [r["name"] for r in s24] == ["qai-hub", "predicted"]
    assert not s24[0]["available"] and s24[0]["reason"].startswith("no Qualcomm AI Hub API token")
    assert [r["name"] for r in report["galaxy-s23"]["runners"]] == ["android-adb", "qai-hub", "predicted"]


# ----------------------------------------------------------------------------- concurrency


def test_run_many_bounds_and_records_each_as_it_finishes():
    lock, live, peak, order = threading.Lock(), [0], [0], []

    def work(k: int) -> Profile:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05 * (3 - k % 3))
        with lock:
            live[0] -= 1
        if k == 4:
            raise qh.FarmJobError("job 4 failed")
        return Profile(model=str(k), format="tflite", device="d", runner="qai-hub", obtained="measured",
                       total_ms=Stats.from_samples([1.0] * 5))

    out = run_many(list(range(6)), work, max_in_flight=2, on_done=lambda o: order.append(o.index))
    assert peak[0] == 2 and sorted(order) == list(range(6)) and order != list(range(6))
    assert [o.index for o in out] == list(range(6)) and str(out[4].error) == "job 4 failed"
    assert all(o.profile is not None for o in out if o.index != 4)
    with pytest.raises(InputFileError, match="farm jobs in flight must be a whole number ≥ 1, got 0"):
        run_many([1], work, max_in_flight=0)


def test_suite_runs_farm_jobs_concurrently_and_records_the_failure(farm, tmp_path, monkeypatch):
    from hybridexport.bench.suite import SuiteResult, run_suite_file
    from hybridexport.report.compare import compare_profiles

    models = ["mobilevit-xxs", "iformer-t", "mobileformer-26m"]
    out = tmp_path / "artifacts"
    from hybridexport.zoo import resolve

    for m in models:  # what `convert` would have written: artifact + manifest (tinynet stands in for each)
        r = resolve(m).resolution
        art = artifact_path(out, m, "tflite", "fp32", [[1, 3, r, r]])
        art.parent.mkdir(parents=True)
        shutil.copy(TINYNET, art)
        manifest_path(art).write_text(json.dumps(_manifest(art, m).to_dict()))
    suite = tmp_path / "farm.toml"
    suite.write_text('name = "farm"\n[defaults]\nruns = 20\nwarmup = 0\nfarm_jobs = 3\n[[run]]\n'
                     f'models = {json.dumps(models)}\ndevices = ["galaxy-s24", "galaxy-s25"]\nformats = ["tflite"]\n'
                     'runner = "qai-hub"\n')
    farm.fail[("iformer-t", "Samsung Galaxy S25 (Family)")] = "Failed to profile the model: out of memory"
    farm.hold_until = 3  # the first three jobs finish only once three were submitted
    seen = []
    monkeypatch.setenv(qh.POLL_ENV, "0.01")
    monkeypatch.setenv(qh.TIMEOUT_ENV, "10")  # jobs run one at a time would wait on each other: fail, not hang
    res = run_suite_file(suite, out=tmp_path / "results.json", artifacts=out,
                         on_item=lambda item, p, f, s: seen.append(item.key))
    saved = SuiteResult.load(tmp_path / "results.json")
    assert len(saved.profiles) == 5 and len(saved.failures) == 1
    f = saved.failures[0]
    assert (f.model, f.device, f.error) == ("iformer-t", "galaxy-s25", "FarmJobError")
    jid = f.reason.split()[3]
    assert f.reason == (f"AI Hub job {jid} on 'Samsung Galaxy S25 (Family)' failed: Failed to profile the model: "
                        f"out of memory ({farm.base}/jobs/{jid}/)")
    assert farm.max_in_flight == 3 and len(farm.jobs) == 6 and len(seen) == 6
    assert {p.environment["device_model"] for p in saved.profiles} == {"Samsung Galaxy S24 (Family)",
                                                                       "Samsung Galaxy S25 (Family)"}
    # compare: two farm runs on one device are a measured pair with a noise test; other hardware or a
    # prediction is informational
    a = next(p for p in res.profiles if p.device == "galaxy-s24")
    slower = Profile.from_dict({**a.to_dict(), "total_ms": {**a.total_ms.__dict__,
                                                            "samples": [x * 1.3 for x in a.total_ms.samples]}})
    slower.total_ms = Stats.from_samples(slower.total_ms.samples)
    assert compare_profiles(a, slower).informational  # the same file again: only the phone differs
    slower.artifact_sha256 = "0" * 64  # a changed artifact is gated
    e = compare_profiles(a, slower)
    assert e.method == "bootstrap" and not e.informational and e.verdict == "regression"
    other = next(p for p in res.profiles if p.device == "galaxy-s25")
    assert compare_profiles(a, other).informational
    predicted = Profile(model=a.model, format="tflite", device=a.device, runner="predicted", obtained="predicted",
                        total_ms=Stats.point(a.total_ms.median))
    assert compare_profiles(predicted, a).informational


def test_suite_farm_jobs_setting_is_checked():
    from hybridexport.bench.suite import parse_suite

    text = '[defaults]\nfarm_jobs = {}\n[[run]]\nmodels = ["iformer-t"]\ndevices = ["galaxy-s24"]\nformats = ["tflite"]\n'
    assert parse_suite('name = "f"\n' + text.format(2), check_models=False).farm_jobs == 2
    with pytest.raises(InputFileError, match=r"^<suite>: \[defaults\] 'farm_jobs' must be a whole number ≥ 1, got 0$"):
        parse_suite('name = "f"\n' + text.format(0), check_models=False)
