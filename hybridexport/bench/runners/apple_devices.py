"""Apple devices for the Core ML runners: what is attached, which one a profile means, whether it is usable.

Rules, each checked before any work starts and each failure one line that says what to do:

* iPhones/iPads are measured through coremltools' own machinery (``remote_device``): it needs macOS,
  ``xcrun``, ``xcodebuild`` and ``devicectl`` on ``PATH`` (coremltools runs ``devicectl`` by name), and its
  ModelRunner Xcode project (shipped in the macOS wheels only).
* The attached device is found in ``xcrun devicectl list devices`` by the profile's
  ``match.product_types`` (``iPhone14,5`` is an iPhone 13). coremltools' own listing keeps no product
  type, so this module lists once (argument list, timeout) and builds coremltools' ``Device`` from that.
* ModelRunner installs on iOS 17.0+; Core ML's compute plan (per-op costs, placement) needs iOS 17.4+.
* The app is signed with ``--ios-team`` / ``$HYBRIDEXPORT_IOS_TEAM`` (Xcode manages the profile), or
  ``--ios-provisioning-profile`` + ``--ios-bundle-id`` (a profile made for that bundle id). With a team
  and no ``--ios-bundle-id`` the bundle id is ``dev.hybridexport.modelrunner.<team>``: bundle ids are
  unique across teams, so coremltools' default (``com.coremltools.modelrunnerd``) can be taken by
  someone else's team.
* Its build is kept under ``$HYBRIDEXPORT_MODELRUNNER_DIR`` (default ``~/.cache/hybridexport/modelrunner``),
  one folder per signing identity (coremltools reuses any build it finds for a device UDID, whatever
  it was signed with), so ``hybridexport devices --prepare`` builds once and ``bench`` reuses it.
* coremltools hands paths to ``devicectl`` and ``xcodebuild`` inside unquoted shell strings, so the
  ModelRunner folder and coremltools' own install path must not contain spaces or shell characters.
* devicectl can list a wired, usable device as ``tunnelState: disconnected`` (it drops the tunnel
  between commands); coremltools' ``prepare_for_model_debugging`` wants ``CONNECTED``, so ``bench``
  asks ``devicectl device info details`` (which brings the tunnel up) and goes on only if it says so.
  ``hybridexport devices`` never does that: it lists only, and caches the list for a few seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridexport.bench.parsers.devicectl import IOSDevice, parse_devicectl_details, parse_devicectl_devices
from hybridexport.bench.probing import once, probe_timeout
from hybridexport.errors import InputFileError, RunnerUnavailableError

TEAM_ENV = "HYBRIDEXPORT_IOS_TEAM"
PROFILE_ENV = "HYBRIDEXPORT_IOS_PROVISIONING_PROFILE"
BUNDLE_ENV = "HYBRIDEXPORT_IOS_BUNDLE_ID"
WORKDIR_ENV = "HYBRIDEXPORT_MODELRUNNER_DIR"
MODELRUNNER_MIN_IOS = (17, 0)  # coremltools/modelrunner: IPHONEOS_DEPLOYMENT_TARGET = 17.0
COMPUTE_PLAN_MIN = {"iOS": (17, 4), "macOS": (14, 4)}  # MLComputePlan availability
LIST_TIMEOUT_S = 20.0
LIST_CACHE_S = 10.0
_listing: tuple[float, list[IOSDevice]] | None = None


def is_macos() -> bool:
    return platform.system() == "Darwin"


def version_tuple(text: str) -> tuple[int, ...]:
    """``"17.5.1"`` → ``(17, 5, 1)`` (stops at the first non-numeric part)."""
    out = []
    for part in str(text).split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def dotted(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def platform_of(profile: Any) -> str:
    """``"macOS"`` for a Mac profile (``match.platform``), else ``"iOS"``."""
    return str((getattr(profile, "match", None) or {}).get("platform", "iOS"))


def not_macos_reason(what: str) -> str:
    return f"{what} needs macOS with Xcode 15+ (this is {platform.system()})"


def tool_problem(*tools: str) -> str:
    """Why the Xcode command-line tools coremltools calls are missing ("" when all are on PATH)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return ""
    if "xcrun" in missing:
        return "no Xcode command-line tools (xcrun not found): install Xcode 15+ and run `xcode-select --install`"
    if missing == ["devicectl"]:
        return ("devicectl is not on PATH (coremltools runs it by name): install Xcode 15+, and if "
                "`xcrun --find devicectl` prints a path, add its folder to PATH")
    return f"{', '.join(missing)} not found: install Xcode 15+ and select it with `sudo xcode-select -s /Applications/Xcode.app`"


def modelrunner_workspace() -> Path:
    """Where coremltools keeps its ModelRunner Xcode workspace (present in its macOS wheels only)."""
    from coremltools.models.ml_program.experimental.remote_device import _ModelRunnerAppBuilder

    return Path(_ModelRunnerAppBuilder._get_project_path()) / "ModelRunner.xcworkspace"


def modelrunner_problem() -> str:
    ws = modelrunner_workspace()
    if ws.is_dir():
        return ""
    return (f"coremltools' ModelRunner app project is missing ({ws}); the macOS wheels ship it: "
            "`pip install --force-reinstall coremltools==9.0` on this Mac")


def _xcrun_json(args: list[str], timeout: float) -> Path:
    """Run ``xcrun devicectl <args> --json-output FILE`` and return FILE (caller deletes its folder)."""
    exe = shutil.which("xcrun")
    if exe is None:
        raise RunnerUnavailableError(tool_problem("xcrun"))
    out = Path(tempfile.mkdtemp(prefix="hx-devicectl-")) / "out.json"
    try:
        res = subprocess.run([exe, "devicectl", *args, "--json-output", str(out)], capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RunnerUnavailableError(f"`xcrun devicectl {' '.join(args[:2])}` gave no answer in {timeout:.0f} s: "
                                     "unplug and replug the device, or allow longer with $HYBRIDEXPORT_PROBE_TIMEOUT") from None
    if not out.exists():
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise RunnerUnavailableError(f"`xcrun devicectl {' '.join(args[:2])}` failed: "
                                     f"{msg[-1] if msg else f'exit {res.returncode}'}")
    return out


def list_attached(refresh: bool = False) -> list[IOSDevice]:
    """The devices ``devicectl list devices`` knows (cached for ``LIST_CACHE_S`` unless ``refresh``; listed
    once for a whole report however many threads ask, see ``bench.probing``)."""
    if not refresh and _listing is not None and time.monotonic() - _listing[0] < LIST_CACHE_S:
        return _listing[1]
    return once(("devicectl list devices",), _list)


def _list() -> list[IOSDevice]:
    global _listing
    out = _xcrun_json(["list", "devices"], probe_timeout(default=LIST_TIMEOUT_S))
    try:
        devices = parse_devicectl_devices(out)
    except InputFileError as exc:
        raise RunnerUnavailableError(str(exc)) from None
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    _listing = (time.monotonic(), devices)
    return devices


def label(dev: IOSDevice) -> str:
    """``iPhone 13 'Bench iPhone 13' (iPhone14,5)``."""
    return f"{dev.marketing_name or dev.device_type or 'device'} '{dev.name}' ({dev.product_type})"


def describe(dev: IOSDevice) -> str:
    """``iPhone 13 'Bench iPhone 13' (iPhone14,5, iOS 17.5.1, disconnected)``."""
    what = dev.marketing_name or dev.device_type or "device"
    return f"{what} '{dev.name}' ({dev.product_type}, iOS {dev.os_version}, {dev.tunnel_state or 'unknown'})"


def find_device(profile: Any, devices: list[IOSDevice]) -> IOSDevice:
    """The attached device the profile means, ready for ModelRunner; else why not, listing what is there."""
    wanted = [str(p) for p in profile.match.get("product_types", [])]
    if not wanted:
        raise RunnerUnavailableError(f"profile {profile.name} names no match.product_types to find its device by")
    label = f"{profile.display_name} ({', '.join(wanted)})"
    hits = [d for d in devices if d.product_type in wanted and d.reality != "virtual"]
    if not hits:
        seen = "; ".join(describe(d) for d in devices) or "none"
        raise RunnerUnavailableError(f"no {label} attached (devicectl lists: {seen})")
    ready = [d for d in hits if d.usable]
    if not ready:
        d = hits[0]
        raise RunnerUnavailableError(f"{describe(d)} is paired but not reachable: unlock it and connect it by USB "
                                     "(or the same Wi-Fi), then retry")
    d = ready[0]
    if d.developer_mode and d.developer_mode != "enabled":
        raise RunnerUnavailableError(f"{describe(d)} has Developer Mode {d.developer_mode}: turn it on in Settings › "
                                     "Privacy & Security › Developer Mode")
    os_v = version_tuple(d.os_version)
    if os_v and os_v < MODELRUNNER_MIN_IOS:
        raise RunnerUnavailableError(f"{describe(d)} runs iOS {d.os_version}; coremltools' ModelRunner app needs iOS "
                                     f"{dotted(MODELRUNNER_MIN_IOS)}+: update the device")
    return d


@dataclass(frozen=True)
class Signing:
    """How coremltools' ModelRunner app is signed for the device."""

    team: str = ""
    provisioning_profile: str = ""
    bundle_id: str = ""

    @property
    def bundle(self) -> str:
        """The bundle id ModelRunner is built with."""
        return self.bundle_id or f"dev.hybridexport.modelrunner.{self.team.lower()}"

    def credentials(self) -> Any:
        from coremltools.models.ml_program.experimental.remote_device import AppSigningCredentials

        return AppSigningCredentials(development_team=self.team or None,
                                     provisioning_profile_uuid=self.provisioning_profile or None,
                                     bundle_identifier=self.bundle)

    def key(self) -> str:
        raw = "\0".join((self.team, self.provisioning_profile or "automatic", self.bundle_id))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]

    def describe(self) -> str:
        return f"provisioning profile {self.provisioning_profile}" if self.provisioning_profile else f"team {self.team}"


def signing(options: dict[str, Any]) -> Signing:
    """The signing identity from the options or the environment; a one-line error when there is none."""
    team = str(options.get("ios_team") or os.environ.get(TEAM_ENV, "")).strip()
    prof = str(options.get("ios_provisioning_profile") or os.environ.get(PROFILE_ENV, "")).strip()
    bundle = str(options.get("ios_bundle_id") or os.environ.get(BUNDLE_ENV, "")).strip()
    if prof and not bundle:
        raise RunnerUnavailableError(f"a provisioning profile needs the bundle id it was made for: add --ios-bundle-id "
                                     f"(or set {BUNDLE_ENV})")
    if not team and not prof:
        raise RunnerUnavailableError(f"no signing identity for coremltools' ModelRunner app: pass --ios-team TEAMID (or "
                                     f"set {TEAM_ENV}), or --ios-provisioning-profile UUID with --ios-bundle-id")
    return Signing(team=team, provisioning_profile=prof, bundle_id=bundle)


def workdir_root() -> Path:
    return Path(os.environ.get(WORKDIR_ENV) or Path.home() / ".cache" / "hybridexport" / "modelrunner")


def workdir(sign: Signing) -> Path:
    """The ModelRunner build and message folder for one signing identity (created)."""
    path = workdir_root() / f"signing-{sign.key()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


_SHELL_CHARS = set(" \t\n'\"$`\\;&|<>()*?[]")  # split, quote, expand or glob inside an unquoted shell word


def path_problem() -> str:
    """Why coremltools' unquoted shell commands would break on the paths it will use ("" when they will not)."""
    for path, fix in ((workdir_root(), f"set {WORKDIR_ENV} to a folder without it"),
                      (modelrunner_workspace(), "install coremltools in an environment whose path has none")):
        bad = sorted(set(str(path)) & _SHELL_CHARS)
        if bad:
            return (f"coremltools passes paths to devicectl and xcodebuild unquoted, and {path} contains {bad[0]!r}: "
                    f"{fix}")
    return ""


def refresh_connection(dev: IOSDevice, timeout: float = 60.0) -> IOSDevice:
    """Ask devicectl for the device's details (this brings its tunnel up) and return what it reports now."""
    if dev.tunnel_state == "connected":
        return dev
    out = _xcrun_json(["device", "info", "details", "--device", dev.identifier], timeout)
    try:
        now = parse_devicectl_details(out)
    except InputFileError as exc:
        raise RunnerUnavailableError(str(exc)) from None
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    if now.tunnel_state != "connected":
        raise RunnerUnavailableError(f"the connection to {describe(now)} did not come up: unlock it, tap Trust if asked, "
                                     "and check the cable")
    return dataclasses.replace(dev, tunnel_state=now.tunnel_state, os_version=now.os_version or dev.os_version,
                               os_build=now.os_build or dev.os_build)


def coreml_device(dev: IOSDevice) -> Any:
    """coremltools' ``remote_device.Device`` for a listed device (same fields its own listing fills)."""
    from coremltools.models.ml_program.experimental.remote_device import Device, DeviceState, DeviceType

    return Device(name=dev.name, type=DeviceType(dev.device_type.lower()), identifier=dev.identifier, udid=dev.udid,
                  os_version=dev.os_version, os_build_number=dev.os_build, developer_mode_state=dev.developer_mode,
                  state=DeviceState(dev.tunnel_state.lower()), session=None)


def host_problem(what: str) -> str:
    """Why this machine cannot drive an iPhone through coremltools ("" when it can): macOS, tools, paths."""
    if not is_macos():
        return not_macos_reason(what)
    return tool_problem("xcrun", "xcodebuild", "devicectl") or modelrunner_problem() or path_problem()


def ios_problem(profile: Any, options: dict[str, Any]) -> str:
    """Why an iPhone/iPad profile cannot be measured here now ("" when it can); lists devices, never waits on one."""
    if platform_of(profile) != "iOS" or profile.kind != "ios":
        return f"serves iPhones and iPads only ('{profile.name}' is a {platform_of(profile)} profile)"
    why = host_problem("measuring on an iPhone")
    if why:
        return why
    try:
        find_device(profile, list_attached())
        signing(options)
    except RunnerUnavailableError as exc:
        return str(exc)
    return ""


async def prepare(dev: IOSDevice, sign: Signing) -> Any:
    """Build (once per signing identity), install and launch coremltools' ModelRunner app; the prepared Device."""
    device = coreml_device(dev)
    try:
        return await device.prepare_for_model_debugging(credentials=sign.credentials(), working_directory=workdir(sign))
    except Exception as exc:  # noqa: BLE001 - coremltools raises ValueError/its own errors with no type to tell apart
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunnerUnavailableError(
            f"coremltools could not build, install or launch its ModelRunner app on {describe(dev)} with "
            f"{sign.describe()} ({type(exc).__name__}: {first}); open {modelrunner_workspace()} in Xcode, pick that "
            "team for the modelrunner target and run it on the device once to see why") from None


def prepare_command(profile: Any, options: dict[str, Any]) -> str:
    """``hybridexport devices --prepare``: build and install ModelRunner now; returns what was done, in a line."""
    import asyncio

    if platform_of(profile) != "iOS" or profile.kind != "ios":
        raise RunnerUnavailableError(f"--prepare is for iPhones and iPads ('{profile.name}' is a {platform_of(profile)} "
                                     "profile; the Mac runner needs no app)")
    why = host_problem("preparing an iPhone")
    if why:
        raise RunnerUnavailableError(why)
    dev = find_device(profile, list_attached(refresh=True))
    sign = signing(options)
    dev = refresh_connection(dev)

    async def go() -> str:
        prepared = await prepare(dev, sign)
        try:
            return prepared.session.bundle_identifier
        finally:
            prepared.session.stop()

    bundle = asyncio.run(go())
    return (f"coremltools' ModelRunner ({bundle}) is installed on {describe(dev)}, signed with {sign.describe()}; "
            f"`hybridexport bench --device {profile.name}` launches it")
