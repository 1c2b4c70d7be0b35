"""A fake `adb` on PATH that replays recorded benchmark_model outputs (the android-adb runner's tests)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "bench"

FAKE_ADB = r'''#!{python}
"""Fake adb: answers devices / getprop / push / chmod / benchmark_model from files named by env vars."""
import json, os, sys
args = sys.argv[1:]
prefix = args[:2] if args[:1] == ["-s"] else []
if args[:1] == ["devices"]:
    with open(os.environ["FAKE_ADB_LOG"] + ".devices", "a") as log:
        log.write("devices\n")
    if os.environ.get("FAKE_ADB_HANG"):
        import time
        time.sleep(float(os.environ["FAKE_ADB_HANG"]))
    print("List of devices attached")
    for line in os.environ.get("FAKE_ADB_DEVICES", "").split(";"):
        if line:
            print(line.replace(":", "\t"))
    print()
    sys.exit(0)
args = args[len(prefix):]
if args[:1] == ["shell"]:  # adb joins the words into one line that the phone's sh parses
    import shlex
    line = " ".join(args[1:])
    quote, special = "", False
    for i, ch in enumerate(line):  # what sh would treat as more than a word: unquoted ; & | < > ` $(
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in ";&|<>`" or line.startswith("$(", i):
            special = True
    if special:
        with open(os.environ["FAKE_ADB_LOG"] + ".injected", "a") as bad:
            bad.write(line + "\n")
        sys.exit(1)
    args = ["shell", *shlex.split(line)]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:  # what the phone runs, word by word
    log.write(json.dumps(prefix + args) + "\n")
if args[:2] == ["shell", "getprop"]:
    props = json.load(open(os.environ["FAKE_ADB_PROPS"]))
    if len(args) > 2:
        print(props.get(args[2], ""))
    else:
        for k, v in props.items():
            print(f"[{{k}}]: [{{v}}]")
elif args[:1] == ["push"]:
    if not os.path.exists(args[1]):
        print(f"adb: error: cannot stat '{{args[1]}}': No such file or directory", file=sys.stderr)
        sys.exit(1)
    print(f"{{args[1]}}: 1 file pushed, 0 skipped.")
elif args[:2] in (["shell", "mkdir"], ["shell", "chmod"]):
    pass
elif args[:1] == ["shell"] and any("benchmark_model" in a for a in args):
    out = os.environ["FAKE_ADB_OUTPUT"]
    graph = next((a for a in args if a.startswith("--graph=")), "")
    for part, path in json.loads(os.environ.get("FAKE_ADB_OUTPUTS", "{{}}")).items():  # per model, when set
        if part in graph:
            out = path
    sys.stdout.write(open(out).read())
else:
    print("unexpected adb call: " + " ".join(args), file=sys.stderr)
    sys.exit(1)
'''

PIXEL8 = {"ro.product.model": "Pixel 8", "ro.product.manufacturer": "Google", "ro.soc.model": "Tensor G3",
          "ro.board.platform": "zuma", "ro.build.version.release": "14", "ro.build.version.sdk": "34",
          "ro.product.cpu.abi": "arm64-v8a"}


def install_fake_adb(tmp_path, monkeypatch):
    """A fake `adb` first on PATH for this test (a Pixel 8 attached), and the calls it saw."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    props = tmp_path / "props.json"
    props.write_text(json.dumps(PIXEL8))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    monkeypatch.delenv("ADB", raising=False)
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "38011FDJH000AB:device")
    monkeypatch.setenv("FAKE_ADB_PROPS", str(props))
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(DATA / "benchmark_model_without_start_tinynet_synthesized.txt"))
    monkeypatch.setenv("HYBRIDEXPORT_BENCHMARK_MODEL", str(binary))

    class Fake:
        log = tmp_path / "adb.log"
        props_file = props

        def calls(self) -> list[list[str]]:
            return [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []

        def set_props(self, **kw: str) -> None:
            props.write_text(json.dumps({**PIXEL8, **kw}))

    return Fake()
