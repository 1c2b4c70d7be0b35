"""User-facing errors: each one a single line that names the problem and the fix.

Rule: a message is one line whatever outside text it quotes (a file's value, an argument): every line
break in it (``str.splitlines``' separators: ``\\n``, ``\\r``, ``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``,
``\\x85``, ``\\u2028``, ``\\u2029``) is shown as its escape, so the text stays readable and exact.
"""

from __future__ import annotations

import re
import sys

_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with each line break written as its escape (``"a\\nb"`` → ``a\\nb``)."""
    return _BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters; an integer too long for ``repr`` (over
    ``sys.get_int_max_str_digits()`` digits, e.g. from a TOML hex literal) is named, not raised on."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<a {type(value).__name__} holding an integer of over {sys.get_int_max_str_digits()} digits>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HybridExportError(Exception):
    """Base of every error the CLI prints as one line (exit code 2) instead of a traceback."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (one_line(args[0]), *args[1:])
        super().__init__(*args)


class UnknownModelError(HybridExportError):
    """A model name that the zoo does not know."""


class CheckpointError(HybridExportError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class UnsupportedOpError(HybridExportError):
    """An op that a target format cannot express; names the op and its nn.Module path."""


class ConversionError(HybridExportError):
    """A converter failed for a reason other than an unsupported op."""


class RunnerUnavailableError(HybridExportError):
    """A runner that cannot run on this machine (no phone attached, not macOS, ...)."""


class InputFileError(HybridExportError):
    """A malformed input file (profile, manifest, suite, tool output)."""


class MachineBusyError(HybridExportError):
    """A host calibration refused because the machine is loaded or its speed unsteady."""
