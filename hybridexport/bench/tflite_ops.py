"""The operators of a ``.tflite`` file (flatbuffer schema from ai-edge-litert) and their nn.Module paths.

litert-torch names each op's output tensor after the module hierarchy of the torch op that made
it (see :func:`hybridexport.bench.mapping.litert_module`); ops whose output was renamed (a
signature output such as ``serving_default_output_0``) take the module of their input's producer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybridexport.bench.mapping import ROOT, litert_module, tflite_kind
from hybridexport.errors import InputFileError


@dataclass
class TfliteOp:
    index: int
    builtin: str  # e.g. "CONV_2D"
    outputs: list[str]
    inputs: list[str]
    module: str = ""

    @property
    def kind(self) -> str:
        return tflite_kind(self.builtin)


def read_tflite_ops(path: str | Path, known: set[str] | None = None) -> list[TfliteOp]:
    """Subgraph 0's operators in execution order, each with its module path."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    try:
        model = schema.Model.GetRootAs(buf, 0)
        graph = model.Subgraphs(0)
        codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            oc = model.OperatorCodes(op.OpcodeIndex())
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = codes.get(code, f"OP_{code}")
            if name == "CUSTOM" and oc.CustomCode():
                name = oc.CustomCode().decode()

            def tname(t: int) -> str:
                return graph.Tensors(t).Name().decode("utf-8", "replace") if t >= 0 else ""

            ops.append(TfliteOp(i, name, [tname(op.Outputs(j)) for j in range(op.OutputsLength())],
                                [tname(op.Inputs(j)) for j in range(op.InputsLength())]))
    except Exception as exc:  # noqa: BLE001 - any flatbuffer failure means a bad file
        raise InputFileError(f"'{path}' is not a readable .tflite model ({type(exc).__name__}: {exc})") from None
    producer: dict[str, TfliteOp] = {}
    for op in ops:
        mods = [m for m in (litert_module(n, known) for n in op.outputs) if m]
        if not mods:
            mods = [producer[n].module for n in op.inputs if n in producer and producer[n].module]
        op.module = mods[0] if mods else ""
        for n in op.outputs:
            producer[n] = op
    for op in ops:  # ops with no located output or input producer (first ops): their consumer's module
        if not op.module:
            nxt = next((o for o in ops if o.index > op.index and set(op.outputs) & set(o.inputs) and o.module), None)
            op.module = nxt.module if nxt else ROOT
    return ops
