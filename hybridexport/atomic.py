"""Atomic writes: write to a temporary sibling, then rename, so no half-written artifact is ever seen.

The temporary folder beside the target is ``.<name>.<pid>.<random>.tmp``. A process killed mid-write
leaves it behind; the next write to the same target removes every such folder whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(final: Path) -> list[Path]:
    """Remove temporary folders of earlier writes to ``final`` whose writing process no longer runs."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(\d+)\.[^.]+\.tmp$")
    if not final.parent.is_dir():
        return removed
    for entry in final.parent.iterdir():
        m = pattern.match(entry.name)
        if m and entry.is_dir() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is renamed onto ``final`` (file or directory).

    Other files written into the temporary path's folder are sidecars: they are moved beside ``final``
    (same names) just before it, so nothing partial is ever readable under a final name."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    tmp = tmpdir / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        for side in sorted(tmpdir.iterdir()):
            if side != tmp:
                target = final.parent / side.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(side, target)
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_json_gz(path: str | Path, data: Any) -> Path:
    """Write ``data`` as compact gzip-compressed JSON atomically, reproducibly (sorted keys, no timestamp)."""
    import gzip

    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    return Path(path)
