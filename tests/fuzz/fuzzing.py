"""What every fuzz test checks, and the inputs they share.

The property: a parser or loader of outside data either returns a result (which the test then checks
is valid) or raises a :class:`~hybridexport.errors.HybridExportError` whose message is one non-empty
line; any other exception, or a call running longer than :data:`HANG_S`, fails the test.
:data:`CASES` counts the calls made (the conftest prints it in the terminal summary).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st

from hybridexport.errors import HybridExportError

T = TypeVar("T")
CASES = 0
HANG_S = 10  # one call on one example: real inputs take milliseconds


def examples(n: int) -> int:
    """``n`` scaled by the loaded profile (``hybridexport-ci``: ×1; ``hybridexport-thorough``: ×10)."""
    return max(1, round(n * settings.default.max_examples / 100))


class Hang(Exception):
    """A call that ran longer than HANG_S."""


def _alarm(_sig: int, _frame: Any) -> None:
    raise Hang(f"the call ran longer than {HANG_S} s")


def outcome(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | HybridExportError:
    """``fn(*args, **kwargs)``, or the HybridExportError it raised once its message is checked to be one line."""
    global CASES
    CASES += 1
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        return fn(*args, **kwargs)
    except HybridExportError as exc:
        msg = str(exc)
        assert msg.strip(), f"{type(exc).__name__} with an empty message"
        assert len(msg.splitlines()) == 1, f"{type(exc).__name__} message is not one line: {msg!r}"
        return exc
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def finite_ge0(x: Any) -> bool:
    return isinstance(x, float | int) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def check_stats(s: Any, positive: bool = False) -> None:
    assert all(finite_ge0(x) for x in (s.median, s.p10, s.p90, *s.samples)), s
    assert isinstance(s.n, int) and s.n >= 0
    assert s.p10 <= s.median * (1 + 1e-9) and s.median <= s.p90 * (1 + 1e-9), s
    if positive:
        assert s.median > 0 and all(x > 0 for x in s.samples), s


def check_profile(p: Any) -> None:
    """What a loaded Profile must be: typed, every time finite and ≥ 0, and written back the same."""
    for name in ("model", "format", "device", "runner", "artifact_sha256", "method"):
        assert isinstance(getattr(p, name), str), name
    from hybridexport.bench.profile import OBTAINED, Profile

    assert p.obtained in OBTAINED
    check_stats(p.total_ms, positive=True)
    assert p.layers
    for r in p.layers:
        assert all(isinstance(x, str) for x in (r.name, r.op_type, r.module, r.compute_unit, r.module_source))
        check_stats(r.ms)
        assert all(v is None or (isinstance(v, int) and v >= 0) for v in (r.macs, r.bytes))
        assert finite_ge0(r.share), r.share
    assert all(isinstance(n, str) for n in p.notes)
    assert all(s and all(isinstance(d, int) and d >= 1 for d in s) for s in p.input_shapes)
    again = Profile.from_dict(json.loads(p.to_json()), source="round trip")
    assert again.to_json() == p.to_json()  # (== would fail on a NaN inside environment or extra)


# ----------------------------------------------------------------------------- inputs

#: values that break loaders most often: wrong types, signs, non-finite numbers, line breaks, huge numbers
WEIRD = st.sampled_from([
    None, True, False, 0, 1, -1, 2**63, -(2**63), 10**400, 0.0, -0.0, -1.5, 1e-320, 1e308, math.nan, math.inf,
    -math.inf, "", " ", "1", "-1", "nan", "x\ny", "\u2028", "\x00", "é" * 3, "0" * 5000, [], {}, [1], [[1]],
    {"a": 1}, {"": None},
])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
VALUES = (WEIRD | JSON).map(copy.deepcopy)  # WEIRD's lists and dicts are shared: callers may change them


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) inside ``doc``: where a mutation can go."""
    out, stack = [], [doc]
    while stack:
        x = stack.pop()
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for k, v in items:
            out.append((x, k))
            stack.append(v)
    return out


def _nudge(value: Any) -> list[Any]:
    """Near-miss replacements for ``value``: same kind, wrong content."""
    if isinstance(value, bool):
        return [not value, int(value), str(value).lower()]
    if isinstance(value, int | float):
        out = [-value, -abs(value) - 1, math.nan, math.inf, str(value), 0, 10**30]
        with contextlib.suppress(OverflowError, ValueError):  # a huge int, or a non-finite float
            out += [float(value) * 1e300, float(value), int(value)]
        return out
    if isinstance(value, str):
        return ["", value + "\n" + value, value * 50, value[:1], 1.0, [value], None]
    if isinstance(value, list):
        return [[], value * 3, value[:1], value[::-1], {}, "list"]
    return [{}, [value], None, "object"]


@st.composite
def mutated(draw: Any, doc: Any, most: int = 4) -> Any:
    """``doc`` (a real document) with 1..``most`` mutations: a value replaced (by a near miss or anything),
    a key deleted, an unknown key added, or a list element duplicated."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, most))):
        slots = _slots(doc)
        if not slots:
            break
        box, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["nudge", "nudge", "replace", "delete", "add", "dup"]))
        if action == "nudge":
            box[key] = copy.deepcopy(draw(st.sampled_from(_nudge(box[key]))))
        elif action == "replace":
            box[key] = copy.deepcopy(draw(VALUES))
        elif action == "delete":
            del box[key]
        elif action == "add" and isinstance(box, dict):
            box[draw(st.text(max_size=8))] = copy.deepcopy(draw(VALUES))
        elif isinstance(box, list):
            box.insert(key, copy.deepcopy(box[key]))
    return doc


def dumps(doc: Any) -> str:
    """JSON text of ``doc`` as a careless writer would produce it (NaN and Infinity literals included)."""
    return json.dumps(doc, allow_nan=True)


def json_text(doc: Any) -> st.SearchStrategy[str]:
    """Text of the mutated document, sometimes cut short or with a few characters changed (truncated files)."""
    return st.one_of(
        mutated(doc).map(dumps),
        st.tuples(st.just(dumps(doc)), st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
        st.tuples(st.just(dumps(doc)), st.integers(0, 10**9), st.characters()).map(
            lambda t: t[0][: t[1] % max(1, len(t[0]))] + t[2] + t[0][t[1] % max(1, len(t[0])) + 1:]),
    )


# ----------------------------------------------------------------------------- real documents to start from

BASELINE = "benchmarks/baselines/suite.json.gz"


def baseline() -> dict[str, Any]:
    """The committed latency baseline (suite results) cut small: one measured and one predicted profile of
    three layers, five samples each (mutating a big document spends the examples on its bulk)."""
    import gzip
    from pathlib import Path

    d = json.loads(gzip.decompress((Path(__file__).resolve().parents[2] / BASELINE).read_bytes()))
    measured = next(p for p in d["profiles"] if p["obtained"] == "measured")
    predicted = next(p for p in d["profiles"] if p["obtained"] == "predicted")
    for p in (measured, predicted):
        p["layers"] = p["layers"][:3]
        p["total_ms"]["samples"] = p["total_ms"]["samples"][:5]
        for r in p["layers"]:
            r["ms"]["samples"] = r["ms"]["samples"][:5]
        p["environment"] = dict(list(p["environment"].items())[:4])
        p["extra"] = dict(list(p["extra"].items())[:2])
    d["profiles"] = [measured, predicted]
    d["item_seconds"] = dict(list(d["item_seconds"].items())[:2])
    d["environment"] = dict(list(d["environment"].items())[:3])
    d["failures"] = [{"model": "m", "device": "pixel8", "format": "tflite", "runner": "android-adb",
                      "error": "RunnerUnavailableError", "reason": "no phone attached"}]
    return d


# ----------------------------------------------------------------------------- tool output (text)

#: tokens that break number parsing: signs, non-finite, over-long, several dots, stray units
TOKENS = st.sampled_from(["-1", "-0.5", "nan", "inf", "1e999", "", "1.2.3", "9" * 5000, "0", "1e-400", "12%",
                          "abc", "[x]", "count=3", "\t", "١٢", "²", "-", ".", "1e5", "999999999999999999999"])


@st.composite
def mutated_text(draw: Any, text: str, most: int = 4) -> str:
    """``text`` with 1..``most`` edits: a line deleted, duplicated or cut short; a whitespace-separated token
    replaced by a number-breaking one; characters inserted; the whole cut short (a truncated capture)."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, most))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["token", "token", "token", "delete", "dup", "cut", "insert", "truncate"]))
        if action == "token":
            parts = lines[i].split(" ") if "\t" not in lines[i] else lines[i].split("\t")
            j = draw(st.integers(0, len(parts) - 1))
            tok = draw(TOKENS | st.text(max_size=6))
            # keep a token's own suffix ("%", ":0") half of the time: the parser reads it apart
            parts[j] = tok + (parts[j][-1:] if parts[j][-1:] in "%]" and draw(st.booleans()) else "")
            lines[i] = ("\t" if "\t" in lines[i] else " ").join(parts)
        elif action == "delete":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif action == "insert":
            k = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:k] + draw(st.text(max_size=4)) + lines[i][k:]
        else:
            lines = lines[: i + 1]
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))
