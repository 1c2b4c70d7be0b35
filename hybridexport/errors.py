"""User-facing errors: each one a single line that names the problem and the fix."""

from __future__ import annotations


class HybridExportError(Exception):
    """Base of every error the CLI prints as one line (exit code 2) instead of a traceback."""

    exit_code = 2


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
