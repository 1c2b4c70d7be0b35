"""Keep converter chatter (progress bars, C++ logs, warnings) off the terminal unless ``--verbose``.

The converters print through Python (tqdm, print, logging, warnings) and through native code (XNNPACK,
MLIR), so both ``sys.stdout``/``sys.stderr`` and file descriptors 1 and 2 are redirected to one
temporary log. A spinner drawn on a duplicate of the real stderr stays visible meanwhile.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console

from hybridexport.console import err_console


@dataclass
class CapturedLog:
    """What the converters printed while captured (empty when not captured)."""

    text: str = ""
    _py: io.StringIO = field(default_factory=io.StringIO)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def converter_output(verbose: bool, message: str = "") -> Iterator[CapturedLog]:
    """Capture everything printed inside the block (unless ``verbose``) and show a spinner with ``message``."""
    log = CapturedLog()
    if verbose:
        with _spinner(err_console, message):
            yield log
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: dict[int, int] = {}
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            for fd in (1, 2):
                try:
                    saved[fd] = os.dup(fd)
                    os.dup2(tmp.fileno(), fd)
                except OSError:
                    saved.pop(fd, None)
            spinner_console = _console_on(saved.get(2))
            quiet_loggers = _quiet_loggers()
            try:
                with (
                    contextlib.redirect_stdout(log._py),
                    contextlib.redirect_stderr(log._py),
                    warnings.catch_warnings(),
                ):
                    warnings.simplefilter("ignore")
                    with _spinner(spinner_console, message):
                        yield log
            finally:
                for lg, level in quiet_loggers:
                    lg.setLevel(level)
                if spinner_console is not None:
                    with contextlib.suppress(Exception):
                        spinner_console.file.close()
        finally:
            for fd, dup in saved.items():
                with contextlib.suppress(OSError):
                    os.dup2(dup, fd)
                os.close(dup)
            tmp.seek(0)
            log.text = log._py.getvalue() + tmp.read().decode("utf-8", "replace")


def _console_on(fd: int | None) -> Console | None:
    if fd is None:
        return None
    try:
        stream = os.fdopen(os.dup(fd), "w", buffering=1, closefd=True)
    except OSError:
        return None
    return Console(file=stream, force_terminal=None)


@contextlib.contextmanager
def _spinner(console: Console | None, message: str) -> Iterator[None]:
    if console is None or not message or not console.is_terminal:
        yield
        return
    from rich.markup import escape

    with console.status(escape(message)):  # a model name may hold [...], which rich reads as markup
        yield


def _quiet_loggers() -> list[tuple[logging.Logger, int]]:
    """Raise converter loggers to ERROR for the duration (their handlers may hold the real stderr)."""
    changed = []
    for name in ("", "coremltools", "torch.onnx", "onnxscript", "executorch", "torchao", "absl", "root"):
        lg = logging.getLogger(name)
        changed.append((lg, lg.level))
        lg.setLevel(logging.ERROR)
    return changed
