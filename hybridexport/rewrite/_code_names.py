"""Whether a module's code can reach a call by name, read from its bytecode (no run, no trace).

Used by prechecks: a module class *mentions* a word when a name or string constant of one of its methods,
or of a Python function those reach through their globals, closures or module attributes (up to
:data:`DEPTH` calls deep), contains the word (case-insensitive). Callables stored on a module instance
(``self.attn_fn = F.scaled_dot_product_attention``) are read too. Conservative by construction: code
the scan cannot read (a C extension calling back into Python) is the only way to miss a call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from collections.abc import Iterator

from torch import nn

#: calls followed from a method before the scan stops
DEPTH = 3


def module_mentions(module: nn.Module, words: frozenset[str]) -> bool:
    """Whether ``module`` or any submodule mentions one of ``words`` (see the module doc)."""
    for m in module.modules():
        if class_mentions(type(m), words):
            return True
        for value in vars(m).values():
            if callable(value) and not isinstance(value, (nn.Module, type)) and _callable_mentions(value, words):
                return True
    return False


@functools.cache
def class_mentions(cls: type, words: frozenset[str]) -> bool:
    """Whether a method of ``cls`` or of a base class below ``nn.Module`` mentions one of ``words``."""
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            continue
        for value in vars(klass).values():
            fn = _function(value)
            if fn is not None and _code_mentions(fn, words, DEPTH):
                return True
    return False


def _callable_mentions(value: object, words: frozenset[str]) -> bool:
    if isinstance(value, functools.partial):
        value = value.func
    fn = _function(value)
    if fn is not None:
        return _code_mentions(fn, words, DEPTH)
    name = str(getattr(value, "__name__", "")).lower()
    return any(w in name for w in words)


def _function(value: object) -> types.FunctionType | None:
    """The Python function behind a method, static/class method, property or decorated function."""
    if isinstance(value, property):
        value = value.fget
    value = getattr(value, "__func__", value)
    if isinstance(value, functools.partial):
        value = value.func
    with contextlib.suppress(ValueError, TypeError):  # a wrapper chain that loops or is not a function
        value = inspect.unwrap(value)  # type: ignore[arg-type]
    return value if isinstance(value, types.FunctionType) else None


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


@functools.cache
def _code_mentions(fn: types.FunctionType, words: frozenset[str], depth: int) -> bool:
    names: set[str] = set()
    for code in _codes(fn.__code__):
        names.update(code.co_names)
        names.update(c for c in code.co_consts if isinstance(c, str))
    if any(w in n.lower() for n in names for w in words):
        return True
    if depth == 0:
        return False
    reached: list[object] = [cell.cell_contents for cell in fn.__closure__ or () if _filled(cell)]
    for name in names:
        value = fn.__globals__.get(name)
        if isinstance(value, types.ModuleType):
            reached.extend(getattr(value, n, None) for n in names)
        else:
            reached.append(value)
    for value in reached:
        callee = _function(value)
        if callee is not None and callee is not fn and _code_mentions(callee, words, depth - 1):
            return True
    return False


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True
