"""Checks every command applies to its arguments before any work starts.

Numeric options get their range from the parser (``type=ranged(1, 8192)``); output locations are
checked for writability up front (``writable_dir``, ``writable_file``), so a bad ``--out`` is one line,
not a traceback after minutes of conversion.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from hybridexport.errors import InputFileError, one_line


def ranged(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``[lo, hi]`` (``hi=None``: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{one_line(text)}' is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range (give {bound})")
        return value

    parse.__name__ = "int"
    return parse


def ranged_float(lo: float, hi: float, closed_hi: bool = True) -> Callable[[str], float]:
    """An argparse ``type`` accepting finite numbers in ``[lo, hi]`` (``[lo, hi)`` when not ``closed_hi``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{one_line(text)}' is not a number") from None
        if not (lo <= value <= hi) or (not closed_hi and value == hi):
            raise argparse.ArgumentTypeError(f"{one_line(text)} is out of range (give {lo:g}..{hi:g}"
                                             f"{'' if closed_hi else ', below ' + format(hi, 'g')})")
        return value

    parse.__name__ = "float"
    return parse


def _first_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder this process can create or write into (one-line error otherwise)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputFileError(f"{flag} '{p}' is a file, not a folder; pass a folder path")
    base = _first_existing(p)
    if not base.is_dir():
        raise InputFileError(f"{flag} '{p}' lies under the file '{base}'; pass a folder path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputFileError(f"{flag} '{p}': '{base}' is not writable; pass a folder you can write to")
    return p


def writable_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a file this process can create or replace (one-line error otherwise)."""
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"{flag} '{p}' is a folder; pass a file path")
    base = _first_existing(p.parent)
    if not base.is_dir():
        raise InputFileError(f"{flag} '{p}' lies under the file '{base}'; pass a path in a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputFileError(f"{flag} '{p}': '{base}' is not writable; pass a path you can write to")
    return p


def shape(text: str) -> tuple[int, ...]:
    """An argparse ``type`` for ``--input-shape``: ``1x3x512x384`` → (1, 3, 512, 384), every dimension ≥ 1."""
    parts = str(text).strip().lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{one_line(str(text))}' is not a shape; write its dimensions joined by x, e.g. "
                                         "1x3x512x384") from None
    bad = [d for d in dims if d < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"'{one_line(str(text))}' has a dimension of {bad[0]}; every dimension must be at least 1")
    if any(d > 1 << 20 for d in dims) or len(dims) > 8:
        raise argparse.ArgumentTypeError(f"'{one_line(str(text))}' is not a model input shape (at most 8 dimensions of ≤ 2^20)")
    return dims


def add_model_arguments(parser: argparse.ArgumentParser, *, resolution: bool = True, names: bool = True) -> None:
    """The options every command that builds a model takes: resolution, input shapes (and input names, for
    the commands that write an artifact)."""
    if resolution:
        parser.add_argument("--resolution", type=ranged(1, 8192), default=None, metavar="N",
                            help="square image input N×N (default: the model's)")
    parser.add_argument("--input-shape", type=shape, action="append", default=None, metavar="1x3xHxW",
                        help="an input's shape (repeat for several inputs; non-square images, token inputs, ...)")
    if names:
        parser.add_argument("--input-name", action="append", default=None, metavar="NAME",
                            help="names of the inputs in the Core ML and ONNX artifacts, in order (repeat; default: input, or input_0, input_1, ...)")


MODEL_HELP = ("a zoo name (`hybridexport list`), timm:<name> or timm:<name>(kw=value), path/to/file.py:factory or "
              "file.py:factory(kw=value, ...) — this imports and runs that file, your own code — or a model.pt2 "
              "saved with torch.export.save (only its tensors are loaded)")
