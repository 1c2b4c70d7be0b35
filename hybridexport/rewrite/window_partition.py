"""``window-partition-rank4``: Swin/MaxViT window and grid partitions without rank-6 tensors.

timm partitions a (B, H, W, C) map into windows by a rank-6 view + permute + view::

    x.view(B, H/ws, ws, W/ws, ws, C).permute(0, 1, 3, 2, 4, 5).view(-1, ws, ws, C)

Axes that stay next to each other through the permute can be merged, so the same data movement is
``x.view(B·H/ws, ws, W/ws, ws·C).permute(0, 2, 1, 3)``: rank 4. A permute whose merged form is still
rank 5 (the grid partition, ``permute(0, 2, 4, 1, 3, 5)``) is a sequence of block swaps, each one a
rank-4 ``view(A, X, Y, Z).permute(0, 2, 1, 3)`` (:func:`permute_rank4`).

The partition functions are module-level functions, not modules, so the pass gives every module whose
methods call one of them (by its global name, identity-checked) a subclass whose methods are the same
code with the rank-4 functions in their globals.
"""

from __future__ import annotations

import functools
import importlib
import math
import types
from collections import Counter
from collections.abc import Callable, Sequence

import hybridexport._tvshim  # noqa: F401  (before anything imports timm/torchvision)

import torch
from torch import nn

from hybridexport.rewrite.base import PassOutcome, RewritePass, count_phrase, module_type_name, register_pass


def merge_axes(shape: Sequence[int], perm: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(shape, perm)`` with every run of input axes that the permute keeps adjacent and in order merged
    into one axis: the same permute on fewer axes."""
    runs: list[list[int]] = []
    for axis in perm:
        if runs and runs[-1][-1] + 1 == axis:
            runs[-1].append(axis)
        else:
            runs.append([axis])
    order = sorted(range(len(runs)), key=lambda i: runs[i][0])  # runs in input order
    merged_shape = [math.prod(shape[a] for a in runs[i]) for i in order]
    rank_of = {run_index: pos for pos, run_index in enumerate(order)}
    return merged_shape, [rank_of[i] for i in range(len(runs))]


def permute_rank4(x: torch.Tensor, shape: Sequence[int], perm: Sequence[int]) -> torch.Tensor:
    """``x.reshape(shape).permute(perm)``, flattened to ``x``'s numel in the permuted order, computed
    with tensors of rank ≤ 4 only (the caller reshapes the result to the shape it wants)."""
    sizes, order = merge_axes(shape, perm)
    if len(sizes) <= 4:
        return x.reshape(sizes).permute(order)
    cur = list(range(len(sizes)))  # axis ids in the current memory order
    y = x
    for i, want in enumerate(order):
        j = cur.index(want)
        if j == i:
            continue
        k = j + 1  # move the longest run that already sits in the wanted order
        while k < len(cur) and i + (k - j) < len(order) and cur[k] == order[i + (k - j)]:
            k += 1
        dims = [sizes[a] for a in cur]
        view = (math.prod(dims[:i]), math.prod(dims[i:j]), math.prod(dims[j:k]), math.prod(dims[k:]))
        y = y.reshape(view).permute(0, 2, 1, 3)
        cur = cur[:i] + cur[j:k] + cur[i:j] + cur[k:]
    return y


def _resolve(shape: Sequence[int], numel: int) -> list[int]:
    """A view shape with its one ``-1`` filled in."""
    known = math.prod(s for s in shape if s != -1)
    return [numel // known if s == -1 else int(s) for s in shape]


def _hw(size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from ``img_size`` or from ``H, W`` (timm's two window_reverse signatures)."""
    h, w = size if len(size) == 2 else size[0]
    return int(h), int(w)


def window_partition(x: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, ws0, ws1, C), as timm's ``window_partition``, rank ≤ 4."""
    b, h, w, c = x.shape
    s0, s1 = window_size
    return permute_rank4(x, (b, h // s0, s0, w // s1, s1, c), (0, 1, 3, 2, 4, 5)).reshape(-1, s0, s1, c)


def window_reverse(windows: torch.Tensor, window_size: Sequence[int], *size: int | Sequence[int]) -> torch.Tensor:
    """(B·nW, ws0, ws1, C) → (B, H, W, C); ``size`` is ``img_size`` or ``H, W``."""
    h, w = _hw(size)
    s0, s1 = window_size
    c = windows.shape[-1]
    shape = _resolve((-1, h // s0, w // s1, s0, s1, c), windows.numel())
    return permute_rank4(windows, shape, (0, 1, 3, 2, 4, 5)).reshape(-1, h, w, c)


def grid_partition(x: torch.Tensor, grid_size: Sequence[int]) -> torch.Tensor:
    """(B, H, W, C) → (B·nG, g0, g1, C) with grid striding, as timm maxxvit's ``grid_partition``."""
    b, h, w, c = x.shape
    g0, g1 = grid_size
    return permute_rank4(x, (b, g0, h // g0, g1, w // g1, c), (0, 2, 4, 1, 3, 5)).reshape(-1, g0, g1, c)


def grid_reverse(windows: torch.Tensor, grid_size: Sequence[int], img_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`grid_partition`."""
    h, w = _hw((img_size,))
    g0, g1 = grid_size
    c = windows.shape[-1]
    shape = _resolve((-1, h // g0, w // g1, g0, g1, c), windows.numel())
    return permute_rank4(windows, shape, (0, 3, 1, 4, 2, 5)).reshape(-1, h, w, c)


def window_partition_nchw(x: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """(B, C, H, W) → (B·nW, C, ws0, ws1), as timm maxxvit's ``window_partition_nchw``."""
    b, c, h, w = x.shape
    s0, s1 = window_size
    return permute_rank4(x, (b, c, h // s0, s0, w // s1, s1), (0, 2, 4, 1, 3, 5)).reshape(-1, c, s0, s1)


def window_reverse_nchw(windows: torch.Tensor, window_size: Sequence[int], img_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition_nchw`."""
    h, w = _hw((img_size,))
    s0, s1 = window_size
    c = windows.shape[1]
    shape = _resolve((-1, h // s0, w // s1, c, s0, s1), windows.numel())
    return permute_rank4(windows, shape, (0, 3, 1, 4, 2, 5)).reshape(-1, c, h, w)


def grid_partition_nchw(x: torch.Tensor, grid_size: Sequence[int]) -> torch.Tensor:
    """(B, C, H, W) → (B·nG, C, g0, g1), as timm maxxvit's ``grid_partition_nchw``."""
    b, c, h, w = x.shape
    g0, g1 = grid_size
    return permute_rank4(x, (b, c, g0, h // g0, g1, w // g1), (0, 3, 5, 1, 2, 4)).reshape(-1, c, g0, g1)


def grid_reverse_nchw(windows: torch.Tensor, grid_size: Sequence[int], img_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`grid_partition_nchw`."""
    h, w = _hw((img_size,))
    g0, g1 = grid_size
    c = windows.shape[1]
    shape = _resolve((-1, h // g0, w // g1, c, g0, g1), windows.numel())
    return permute_rank4(windows, shape, (0, 3, 4, 1, 5, 2)).reshape(-1, c, h, w)


_NHWC_WINDOWS = {"window_partition": window_partition, "window_reverse": window_reverse}
#: timm module → {function name: rank-4 replacement with the same signature and result}
KNOWN_FUNCTIONS: dict[str, dict[str, Callable[..., torch.Tensor]]] = {
    "timm.models.maxxvit": {
        **_NHWC_WINDOWS, "grid_partition": grid_partition, "grid_reverse": grid_reverse,
        "window_partition_nchw": window_partition_nchw, "window_reverse_nchw": window_reverse_nchw,
        "grid_partition_nchw": grid_partition_nchw, "grid_reverse_nchw": grid_reverse_nchw,
    },
    "timm.models.swin_transformer": _NHWC_WINDOWS,
    "timm.models.swin_transformer_v2": _NHWC_WINDOWS,
    "timm.models.swin_transformer_v2_cr": _NHWC_WINDOWS,
    "timm.models.gcvit": _NHWC_WINDOWS,
    "timm.models.davit": _NHWC_WINDOWS,
}


@functools.cache
def _replacements() -> dict[int, tuple[str, Callable[..., torch.Tensor]]]:
    """``id(original function)`` → (qualified name, rank-4 replacement), for the modules importable here."""
    out: dict[int, tuple[str, Callable[..., torch.Tensor]]] = {}
    for mod_name, funcs in KNOWN_FUNCTIONS.items():
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # pragma: no cover - an older timm
            continue
        for fn_name, new in funcs.items():
            orig = getattr(mod, fn_name, None)
            if callable(orig):
                out[id(orig)] = (f"{mod_name.rsplit('.', 1)[-1]}.{fn_name}", new)
    return out


def _module_proxy(module: types.ModuleType, names: set[str]) -> tuple[types.ModuleType | None, set[str]]:
    """A stand-in for ``module`` (a global of a method, used as ``module.window_partition(...)``) whose
    known partition functions among ``names`` are the rank-4 ones; ``(None, set())`` when it has none."""
    known = _replacements()
    hits = {n: known[id(getattr(module, n))] for n in names if id(getattr(module, n, None)) in known}
    if not hits:
        return None, set()
    proxy = types.ModuleType(module.__name__, module.__doc__)
    proxy.__dict__.update(vars(module))
    for attr, (_, new) in hits.items():
        setattr(proxy, attr, new)
    return proxy, {qual for qual, _ in hits.values()}


def _patched(fn: types.FunctionType, swaps: dict[str, object]) -> types.FunctionType:
    """``fn`` with the same code, defaults and closure, and ``swaps`` in its globals."""
    new = types.FunctionType(fn.__code__, {**fn.__globals__, **swaps}, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__, new.__doc__ = fn.__qualname__, fn.__doc__
    return new


@functools.cache
def rank4_subclass(cls: type[nn.Module]) -> tuple[type[nn.Module] | None, tuple[str, ...]]:
    """A subclass of ``cls`` whose methods call the rank-4 partition functions, and the functions swapped
    (``(None, ())`` when no method of ``cls`` calls a known one)."""
    known = _replacements()
    methods: dict[str, types.FunctionType] = {}
    used: set[str] = set()
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        for attr, fn in vars(klass).items():
            if attr in methods or not isinstance(fn, types.FunctionType):
                continue
            swaps: dict[str, object] = {}
            names = set(fn.__code__.co_names)
            for name in names:
                value = fn.__globals__.get(name)
                hit = known.get(id(value))
                if hit is not None:  # ``window_partition(x, ws)`` (imported by name)
                    swaps[name] = hit[1]
                    used.add(hit[0])
                elif isinstance(value, types.ModuleType):  # ``swin_transformer.window_partition(x, ws)``
                    proxy, quals = _module_proxy(value, names)
                    if proxy is not None:
                        swaps[name] = proxy
                        used.update(quals)
            if swaps:
                methods[attr] = _patched(fn, swaps)
    if not methods:
        return None, ()
    sub = type(f"RankFour{cls.__name__}", (cls,), {**methods, "__module__": __name__, "__doc__": cls.__doc__})
    return sub, tuple(sorted(used))


_NONE = "no module calls a known window/grid partition function (timm maxxvit, swin, swin v2, gcvit, davit)"


@register_pass
class WindowPartitionRankFour(RewritePass):
    """Give modules that call timm's window/grid partition functions rank-4 versions of them.

    Before (timm ``window_partition``, ``grid_partition`` and their reverses)::

        (B,H,W,C) ─ view (B, H/ws, ws, W/ws, ws, C) ─ permute(0,1,3,2,4,5) ─ view (B·nW, ws, ws, C)
    After::

        (B,H,W,C) ─ reshape (B·H/ws, ws, W/ws, ws·C) ─ permute(0,2,1,3) ─ reshape (B·nW, ws, ws, C)
        grid: two rank-4 block swaps instead of the rank-6 permute(0,2,4,1,3,5)

    Matches any module whose methods (its class or a base class) call one of the functions listed in
    :data:`KNOWN_FUNCTIONS` (maxxvit, swin v1/v2/v2-cr, gcvit, davit) by global name or as an attribute
    of its timm module; the module's class becomes a subclass with the same method code. Inline rank-6 views in other code are left alone
    (the pipeline's report names every remaining rank ≥ 5 op and its module).
    """

    name = "window-partition-rank4"
    summary = "Swin/MaxViT window and grid partitions as rank-4 reshapes and permutes (no rank-6 views)"

    def precheck(self, model: nn.Module) -> str:
        if any(rank4_subclass(cls)[0] is not None for cls in {type(m) for m in model.modules()}):
            return ""
        return _NONE

    def apply(self, model: nn.Module, example: torch.Tensor) -> PassOutcome:
        done: Counter[str] = Counter()
        functions: set[str] = set()
        skipped: list[str] = []
        for path, mod in model.named_modules():
            sub, used = rank4_subclass(type(mod))
            if sub is None:
                continue
            name = module_type_name(mod)
            try:
                mod.__class__ = sub
            except TypeError as exc:  # a class whose instances cannot change class (slots, extension types)
                skipped.append(f"left as is: {path or '(root)'} ({name}: {exc})")
                continue
            done[name] += 1
            functions.update(used)
        if not done:
            return PassOutcome(0, notes=[_NONE, *skipped])
        return PassOutcome(sum(done.values()),
                           [count_phrase(done, "rewrote", "with rank-4 " + ", ".join(sorted(functions)))], skipped)
