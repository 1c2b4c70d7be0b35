"""Read a JSON input file, turning a missing or malformed file into a one-line ``InputFileError``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hybridexport.errors import InputFileError


def read_json(path: str | Path, what: str, hint: str | None = None, expect_object: bool = False) -> Any:
    """The parsed content of ``path``; errors name it as ``what`` (e.g. "device profile") and end with
    ``hint`` (how to fix it). ``expect_object``: anything but a JSON object is an error too."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(f"{what} '{p}' does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{what} '{p}' is not valid JSON ({exc})" + (f"; {hint}" if hint else "")) from None
    if expect_object and not isinstance(data, dict):
        raise InputFileError(f"{what} '{p}' is not a JSON object")
    return data
