"""Reading JSON from outside: every way a file or text can be unreadable is one ``InputFileError``.

Rules: a missing file, a folder, an unreadable file, text over :data:`MAX_TEXT_BYTES` (gzip input by its
magic bytes, counted once decompressed), invalid UTF-8, invalid JSON, nesting too deep for the parser,
an integer too long to convert, and an unpaired UTF-16 surrogate escape (``"\\ud800"``, which no file can
be written back with) are each one line naming ``what`` the file is, ending with ``hint`` (how to fix it).
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError

#: the largest text read (compressed or not): a small gzip bomb must not exhaust memory
MAX_TEXT_BYTES = 256 * 2**20
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _tail(hint: str | None) -> str:
    return f"; {hint}" if hint else ""


def read_bytes(path: str | Path, what: str, hint: str | None = None, limit: int = MAX_TEXT_BYTES,
               gunzip: bool = False) -> bytes:
    """The file's bytes (gunzipped when ``gunzip`` and it starts with gzip's magic), at most ``limit``."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            magic = fh.read(2)
            fh.seek(0)
            if gunzip and magic == b"\x1f\x8b":
                import gzip

                with gzip.GzipFile(fileobj=fh) as gz:
                    data = gz.read(limit + 1)
            else:
                data = fh.read(limit + 1)
    except FileNotFoundError:
        raise InputFileError(f"{what} '{p}' does not exist{_tail(hint)}") from None
    except IsADirectoryError:
        raise InputFileError(f"{what} '{p}' is a folder, not a file{_tail(hint)}") from None
    except PermissionError:
        raise InputFileError(f"{what} '{p}' is not readable (permission denied); fix its permissions") from None
    except (EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
        raise InputFileError(f"{what} '{p}' is unreadable or truncated ({type(exc).__name__}){_tail(hint)}") from None
    if len(data) > limit:
        raise InputFileError(f"{what} '{p}' holds more than {limit // 2**20} MiB of text; such a file is far smaller "
                             f"(is it the right file?){_tail(hint)}")
    return data


def parse_json(text: str | bytes, what: str, hint: str | None = None) -> Any:
    """``json.loads`` whose every failure is one line (``what`` names the input, e.g. ``"profile 'a.json'"``)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} is not UTF-8 text (byte {exc.start}){_tail(hint)}") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                             f"{_tail(hint)}") from None
    except RecursionError:
        raise InputFileError(f"{what} nests arrays or objects too deeply to be real output{_tail(hint)}") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise InputFileError(f"{what} is not usable JSON ({str(exc).splitlines()[0][:80]}){_tail(hint)}") from None
    if "\\u" in text and _has_surrogate(data):
        raise InputFileError(f"{what} holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not "
                             f"text{_tail(hint)}")
    return data


def _has_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if _SURROGATE.search(x):
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def read_json(path: str | Path, what: str, hint: str | None = None, expect_object: bool = False,
              gunzip: bool = False, limit: int = MAX_TEXT_BYTES) -> Any:
    """The parsed content of ``path``; errors name it as ``what`` (e.g. "device profile") and end with
    ``hint`` (how to fix it). ``expect_object``: anything but a JSON object is an error too."""
    p = Path(path)
    data = parse_json(read_bytes(p, what, hint, limit=limit, gunzip=gunzip), f"{what} '{p}'", hint)
    if expect_object and not isinstance(data, dict):
        raise InputFileError(f"{what} '{p}' is not a JSON object (it holds a {type(data).__name__}){_tail(hint)}")
    return data
