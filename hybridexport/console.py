"""Shared rich consoles and a progress helper, so every command prints the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True)


def plain(text: object) -> str:
    """``text`` for a rich markup string or table cell, shown as is: a name from outside (a model, a layer, a
    file, a tool's message) may hold ``[...]``, which rich would take for markup (``[/]`` is even an error)."""
    return escape(str(text))


def one_line(text: object) -> str:
    """``text`` on one line: line breaks and other control characters become spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())


@contextlib.contextmanager
def progress(description: str, total: float | None = None) -> Iterator[tuple[Progress, int]]:
    """A transient progress bar (spinner when ``total`` is None) on stderr."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}" if total else ""),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=total)
        yield prog, task


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner on stderr while a step of unknown length runs."""
    with err_console.status(message):
        yield
