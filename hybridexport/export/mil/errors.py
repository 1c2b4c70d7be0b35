"""Errors of the MIL interpreter, each one line that names the problem and the fix."""

from __future__ import annotations

from hybridexport.errors import HybridExportError, InputFileError


class NotInterpreted(HybridExportError):
    """The program uses MIL ops the interpreter does not implement (checked before anything runs).

    ``op_types`` lists every missing type, ``op_type`` the first; ``parity_reason`` is what a parity
    record says instead of a pass.
    """

    def __init__(self, op_types: list[str], example_op: str = "") -> None:
        self.op_types = sorted(set(op_types))
        self.op_type = self.op_types[0]
        where = f" (first at op '{example_op}')" if example_op else ""
        names = ", ".join(f"`{t}`" for t in self.op_types)
        super().__init__(
            f"MIL op {names} {'is' if len(self.op_types) == 1 else 'are'} not interpreted{where}; "
            "the artifact cannot be verified here: check it on macOS (Core ML) or export --to onnx"
        )

    @property
    def parity_reason(self) -> str:
        names = ", ".join(f"`{t}`" for t in self.op_types)
        return f"not verified: MIL op {names} {'is' if len(self.op_types) == 1 else 'are'} not interpreted"


class PackageError(InputFileError):
    """A path that is not a readable Core ML ML Program package."""


class FeedError(HybridExportError):
    """Inputs that do not fit the program's inputs (count, shape, pixel range)."""


class ProgramError(HybridExportError):
    """The program contradicts itself at run time (an op's result has another shape than the program declares)."""
