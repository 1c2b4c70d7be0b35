"""The ``hybridexport`` command: a thin layer over the stage packages' public functions.

Each subcommand lives in a small module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; those modules import heavy libraries (torch, converters) inside ``run`` only,
so ``hybridexport --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import NoReturn

from hybridexport.errors import HybridExportError

COMMANDS: dict[str, str] = {
    "list": "hybridexport.zoo.commands",
    "info": "hybridexport.analyze.command",
    "rewrite": "hybridexport.rewrite.command",
    "convert": "hybridexport.export.command",
    "bench": "hybridexport.bench.command",
    "devices": "hybridexport.bench.devices_command",
    "calibrate": "hybridexport.calibrate.command",
    "compare": "hybridexport.report.command",
    "diagnose": "hybridexport.export.mil.command",
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the problem and where help is (exit 2)."""

    def error(self, message: str) -> NoReturn:
        from hybridexport.console import one_line

        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = OneLineParser(
        prog="hybridexport",
        description="Rewrite, export and profile mobile hybrid vision networks.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show full tracebacks and converter logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = {name: importlib.import_module(modname) for name, modname in COMMANDS.items()}
    for name, mod in mods.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        mod.add_arguments(p)
    return parser, mods


#: loggers of the converters that warn at import about versions they were not tested with, CUDA
#: extensions a CPU machine lacks, or a deprecated pytree registration; --verbose shows them
NOISY_LOGGERS = ("coremltools", "torchao", "torch.utils._pytree")


def quiet_library_warnings() -> None:
    """Keep the converters' import-time warnings out of the terminal (errors still show)."""
    import logging

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser, mods = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    verbose = bool(getattr(args, "verbose", False)) or os.environ.get("HYBRIDEXPORT_VERBOSE") == "1"
    if not verbose:
        quiet_library_warnings()
    try:
        return int(mods[args.command].run(args) or 0)
    except HybridExportError as exc:
        if verbose:
            traceback.print_exc()
        from hybridexport.console import err_console, one_line, plain

        err_console.print(f"[bold red]error:[/] {plain(one_line(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
