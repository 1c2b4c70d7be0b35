"""Retry hints of a failed or mismatching conversion: only options that were not in effect already.

Formats propose what may help (``Format.failure_hints``); :func:`honest_hints` is the one place every
proposal passes through before a user sees it. A hint ``--flag value`` is dropped when the attempt ran
with that value, a bare ``--flag`` when it was in effect, and ``--no-rewrite`` when no pass changed the
model (it would convert the same graph). With ``--passes`` given, ``--no-rewrite`` alone would be
rejected as contradictory, so it reads ``--no-rewrite instead of --passes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridexport.export.formats.base import Format
    from hybridexport.export.options import ExportOptions


def attempt_flags(fmt: Format, opts: ExportOptions, *, rewritten: bool) -> dict[str, object]:
    """The command-line options in effect for one conversion: flag → value (``True`` for a bare flag)."""
    flags: dict[str, object] = {"--to": fmt.name, "--precision": opts.precision}
    key = fmt.key_options(opts)
    if "coreml_target" in key:
        flags["--coreml-target"] = key["coreml_target"]
    if opts.keep_mismatch:
        flags["--keep-mismatch"] = True
    if not rewritten:
        flags["--no-rewrite"] = True  # nothing was rewritten: the same graph as with --no-rewrite
    return flags


def honest_hints(hints: Sequence[str], flags: Mapping[str, object], *, passes_given: bool = False) -> list[str]:
    """``hints`` without the ones ``flags`` (from :func:`attempt_flags`) already had in effect, deduplicated."""
    out: list[str] = []
    for hint in hints:
        words = hint.split()
        flag = next((w for w in words if w.startswith("--")), None)
        if flag is not None:
            value = words[words.index(flag) + 1] if words.index(flag) + 1 < len(words) else None
            current = flags.get(flag)
            if current is True or (value is not None and current is not None and str(current) == value):
                continue
            if flag == "--no-rewrite" and passes_given and "--passes" not in hint:
                hint = f"{hint} instead of --passes"
        if hint not in out:
            out.append(hint)
    return out
