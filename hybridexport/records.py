"""Outside JSON into dataclasses, every field's type checked (cattrs with strict scalar hooks).

Rules: ``str`` fields take strings only, ``int`` fields whole numbers (never ``true``/``false``),
``float`` fields numbers (ints widen; a number too large for a float is refused), ``bool`` fields
``true``/``false``; lists, dicts and nested dataclasses are checked element by element; unknown keys
are refused unless ``extra_ok``. A hook may raise :class:`FieldError` for a rule of its own (a range,
a name pattern). The first problem becomes one :class:`~hybridexport.errors.InputFileError` line
naming where it is (``$.layers[3].macs``) and how to fix the file.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, TypeVar

import cattrs
from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn

from hybridexport.errors import InputFileError

T = TypeVar("T")


class FieldError(ValueError):
    """A value of the right type that breaks a rule (its message is shown as is)."""


def _kind(value: Any) -> str:
    return "null" if value is None else {bool: "a boolean", str: "a string", int: "a whole number", float: "a number",
                                         list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _strict(want: type, label: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _t: Any) -> Any:
        if isinstance(value, bool) != (want is bool) or not isinstance(value, want):
            raise FieldError(f"is {_kind(value)}, not {label}")
        return value

    return hook


def _number(value: Any, _t: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"is {_kind(value)}, not a number")
    try:
        return float(value)
    except OverflowError:
        raise FieldError("is a number too large for a float") from None


def _container(want: type, label: str, factory: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A hook factory: the value must be a ``want`` (cattrs would turn a string into a list of letters)."""

    def make(t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
        inner = factory(t, conv)

        def hook(value: Any, t2: Any) -> Any:
            if not isinstance(value, want):
                raise FieldError(f"is {_kind(value)}, not {label}")
            return inner(value, t2)

        return hook

    return make


def _make_converter(forbid_extra: bool) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra)
    conv.register_structure_hook_factory(is_sequence, _container(list, "a list", list_structure_factory))
    conv.register_structure_hook_factory(is_mapping, _container(dict, "an object", mapping_structure_factory))
    conv.register_structure_hook_factory(dataclasses.is_dataclass, _container(dict, "an object", make_dict_structure_fn))
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "a whole number"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(float, _number)
    return conv


_STRICT = _make_converter(True)
_LENIENT = _make_converter(False)


_CONVERTERS: dict[tuple[bool, tuple[tuple[type, Callable[[Any, Any], Any]], ...]], cattrs.Converter] = {}


def _converter(extra_ok: bool, hooks: tuple[tuple[type, Callable[[Any, Any], Any]], ...]) -> cattrs.Converter:
    """The strict converter with ``hooks`` added (built once per set of hooks: cattrs compiles per class)."""
    key = (extra_ok, hooks)
    conv = _CONVERTERS.get(key)
    if conv is None:
        conv = (_LENIENT if extra_ok else _STRICT).copy()
        for t, hook in hooks:
            conv.register_structure_hook(t, hook)
        _CONVERTERS[key] = conv
    return conv


def _message(exc: BaseException, path: str = "$") -> tuple[str, str]:
    """(path, message) of the first leaf problem inside a cattrs validation error."""
    while isinstance(exc, cattrs.BaseValidationError):
        if not exc.exceptions:
            break
        inner = exc.exceptions[0]
        notes = getattr(inner, "__notes__", None) or []
        note = notes[0] if notes else None
        name = getattr(note, "name", None)
        idx = getattr(note, "index", None)
        if name is not None:
            path += f".{name}"
        elif idx is not None:
            path += f"[{idx!r}]" if isinstance(idx, str) else f"[{idx}]"
        exc = inner
    if isinstance(exc, ForbiddenExtraKeysError):
        return path, f"has unknown key(s) {sorted(map(str, exc.extra_fields))[:5]}"
    if isinstance(exc, FieldError):
        return path, str(exc)
    if isinstance(exc, KeyError):
        return path, "is missing (a required field)"
    if isinstance(exc, AttributeError | TypeError) and ("keys" in str(exc) or "mapping" in str(exc)):
        return path, "is not an object"
    if isinstance(exc, TypeError | ValueError):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return path, f"is malformed ({first[:100]})"
    return path, f"is malformed ({type(exc).__name__})"


def structure(data: Any, cls: type[T], source: str, fix: str, extra_ok: bool = False,
              hooks: dict[type, Callable[[Any, Any], Any]] | None = None) -> T:
    """``data`` as a ``cls`` (a dataclass), every field checked; else one InputFileError naming the field."""
    if not isinstance(data, dict):
        raise InputFileError(f"{source}: expected a JSON object, got {_kind(data)}; {fix}")
    conv = _converter(extra_ok, tuple(sorted((hooks or {}).items(), key=lambda kv: id(kv[0]))))
    try:
        return conv.structure(data, cls)
    except InputFileError:
        raise
    except (cattrs.BaseValidationError, FieldError, TypeError, ValueError, KeyError, AttributeError) as exc:
        path, msg = _message(exc)
        raise InputFileError(f"{source}: {path} {msg}; {fix}") from None


def finite(value: float, what: str, minimum: float | None = 0.0, positive: bool = False) -> float:
    """``value`` when finite and at least ``minimum`` (above 0 when ``positive``); else FieldError."""
    if not math.isfinite(value) or (minimum is not None and value < minimum) or (positive and value <= 0):
        need = "a positive number" if positive else ("a number" if minimum is None else f"a number ≥ {minimum:g}")
        raise FieldError(f"{what} is {value!r}, not {need}")
    return value
