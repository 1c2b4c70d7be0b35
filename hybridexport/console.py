"""Shared rich consoles and a progress helper, so every command prints the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True)


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
