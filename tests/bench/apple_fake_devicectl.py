"""A stand-in for ``devicectl`` (and the phone behind it) for the Apple runner tests: run as a script.

It answers the commands coremltools' ``remote_device`` and hybridexport issue, from files named by
environment variables, and plays coremltools' ModelRunner app on the "device": a request message
copied into the app's container gets its response written there at once, in the formats of
coremltools/modelrunner/ModelRunner/ModelService.swift (synthesized: no recording of the app exists).

    FAKE_XCODE_LOG            every command line, one JSON list per line
    FAKE_DEVICECTL_LIST       `list devices` JSON (recorded / synthesized fixtures)
    FAKE_DEVICECTL_DETAILS    `device info details` JSON
    FAKE_DEVICE_ROOT          the device's app containers: ROOT/<bundle id>/...
    FAKE_MODELRUNNER_TIMINGS  {"load_ns": [...], "predict_ns": [...]}: durations the app reports, in order
    FAKE_MODELRUNNER_PLAN     ModelRunner's compute-plan reply ({"infos": [...]}); absent: the app answers
                              "MLComputePlan is not supported on this platform." (iOS < 17.4)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

SOURCE = "Documents/modelrunnerd"


def envelope(command: str, result: dict) -> dict:
    return {"info": {"arguments": ["devicectl", *sys.argv[1:]], "commandType": command, "jsonVersion": 2,
                     "outcome": "success", "version": "397.21"}, "result": result}


def opt(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def write_json_output(args: list[str], data: dict) -> None:
    out = opt(args, "-j", "--json-output")
    if out:
        Path(out).write_text(json.dumps(data))


def next_duration(root: Path, key: str) -> int:
    timings = json.loads(Path(os.environ["FAKE_MODELRUNNER_TIMINGS"]).read_text())
    counter = root / f".{key}.count"
    i = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(i + 1))
    values = timings[key]
    return int(values[min(i, len(values) - 1)])


def respond(container: Path, request_id: str) -> None:
    """ModelRunner: process requests/messages/<id>/message.json, write responses/<id>/message.json."""
    base = container / SOURCE
    msg = json.loads((base / "requests" / "messages" / request_id / "message.json").read_text())
    params, method = msg["params"], msg["method"]
    out_dir = base / "responses" / request_id
    out_dir.mkdir(parents=True, exist_ok=True)
    reply: dict = {"jsonrpc": "2.0", "id": request_id}
    models = container / ".loaded_models.json"
    loaded = json.loads(models.read_text()) if models.exists() else {}
    if method == "MLModelService.Load":
        resource = base / "requests" / "resources" / request_id / msg["resource"]
        loaded[params["modelID"]] = {"path": str(resource), "computeUnits": params["computeUnits"]}
        models.write_text(json.dumps(loaded))
        reply["result"] = {"modelID": params["modelID"], "duration": next_duration(container, "load_ns"),
                           "isCached": False}
    elif method == "MLModelService.Prediction":
        model = loaded.get(params["modelID"])
        if model is None:
            reply["error"] = {"code": -32001, "message": f"The model with ID {params['modelID']} is not loaded."}
        else:
            meta = json.loads((Path(model["path"]) / "metadata.json").read_text())[0]
            want = sorted(i["name"] for i in meta["inputSchema"])
            if sorted(params["inputs"]) != want:
                reply["error"] = {"code": -32602, "message": f"Malformed request: inputs {sorted(params['inputs'])}, "
                                                             f"the model takes {want}"}
                (out_dir / "message.json").write_text(json.dumps(reply))
                return
            outputs, blob = {}, b""
            for o in meta["outputSchema"]:
                shape = json.loads(o["shape"])
                n = 1
                for d in shape:
                    n *= d
                strides = [1] * len(shape)
                for k in range(len(shape) - 2, -1, -1):
                    strides[k] = strides[k + 1] * shape[k + 1]
                outputs[o["name"]] = {"shape": shape, "strides": strides, "dataType": "Float32",
                                      "storage": {"offset": len(blob), "size": 4 * n}}
                blob += b"\0" * (4 * n)
            (out_dir / "outputs.bin").write_bytes(blob)
            reply["result"] = {"modelID": params["modelID"], "outputs": outputs,
                               "duration": next_duration(container, "predict_ns"), "resource": "outputs.bin"}
            reply["resource"] = "outputs.bin"
    elif method == "MLModelService.ComputePlan":
        plan = os.environ.get("FAKE_MODELRUNNER_PLAN")
        if plan:
            reply["result"] = {"modelID": params["modelID"], **json.loads(Path(plan).read_text())}
        else:
            reply["error"] = {"code": -32001, "message": "Unsupported request: MLComputePlan is not supported on this "
                                                         "platform."}
    elif method == "MLModelService.Unload":
        loaded.pop(params["modelID"], None)
        models.write_text(json.dumps(loaded))
        reply["result"] = {"modelID": params["modelID"]}
    else:
        reply["error"] = {"code": -32601, "message": f"unknown method {method}"}
    (out_dir / "message.json").write_text(json.dumps(reply))


def main() -> int:
    args = sys.argv[1:]
    with open(os.environ["FAKE_XCODE_LOG"], "a") as log:
        log.write(json.dumps(["devicectl", *args]) + "\n")
    root = Path(os.environ.get("FAKE_DEVICE_ROOT", "/nonexistent"))
    if args[:2] == ["list", "devices"]:
        write_json_output(args, json.loads(Path(os.environ["FAKE_DEVICECTL_LIST"]).read_text()))
    elif args[:3] == ["device", "info", "details"]:
        write_json_output(args, json.loads(Path(os.environ["FAKE_DEVICECTL_DETAILS"]).read_text()))
    elif args[:3] == ["device", "install", "app"]:
        app = Path([a for a in args[3:] if a.endswith(".app")][0])
        bundle = (app / "bundle_id.txt").read_text().strip()
        (root / bundle).mkdir(parents=True, exist_ok=True)
        write_json_output(args, envelope("devicectl.device.install.app", {"deviceIdentifier": opt(args, "-d"),
                          "installedApplications": [{"bundleID": bundle, "databaseUUID": "0F3C9A1E-0000-4000-8000-0000000000AA",
                                                     "installationURL": f"file:///private/var/containers/Bundle/Application/X/{app.name}/"}]}))
    elif args[:3] == ["device", "process", "launch"]:
        # the app runs until coremltools stops the session: SIGTERM, or its `sh -c` parent ending (dash forks
        # the command instead of exec-ing it, so terminate() reaches only the shell)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        parent = os.getppid()
        while os.getppid() == parent:
            time.sleep(0.1)
    elif args[:3] == ["device", "copy", "to"]:
        bundle = opt(args, "--domain-identifier")
        src, dst = Path(opt(args, "--source")), root / bundle / opt(args, "--destination")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy(src, dst)
        parts = Path(opt(args, "--destination")).parts
        if parts[-1] == "message.json" and "messages" in parts:
            respond(root / bundle, parts[-2])
        write_json_output(args, envelope("devicectl.device.copy.to", {"source": str(src), "destination": str(dst)}))
    elif args[:3] == ["device", "copy", "from"]:
        bundle = opt(args, "--domain-identifier")
        src, dst = root / bundle / opt(args, "--source"), Path(opt(args, "--destination"))
        if not src.exists():
            print(f"ERROR: {src} does not exist", file=sys.stderr)
            return 1
        shutil.copy(src, dst)
        write_json_output(args, envelope("devicectl.device.copy.from", {"source": str(src), "destination": str(dst)}))
    else:
        print("unexpected devicectl command: " + " ".join(args), file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main())
