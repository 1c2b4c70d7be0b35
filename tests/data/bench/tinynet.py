"""Records tool outputs of ``tests/models.py``'s TinyNet (default size) for the bench tests.

``python tests/data/bench/tinynet.py`` rewrites the recordings made from it (see README.md):
``tinynet.tflite`` (litert-torch), ``tinynet_coreml_ops.json`` (op names of its coremltools ML
Program) and ``ort_trace_tinynet.json`` (a real onnxruntime profile of its dynamo ONNX export).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the one TinyNet lives in models.py

from models import TinyNet  # noqa: E402

# the recordings were made with TinyNet defined in this script: litert-torch names tensors after the
# class's module, so keep it the same for re-recordings
TinyNet.__module__ = "__main__"


def example() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def build() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


if __name__ == "__main__":  # pragma: no cover - recording script
    import json

    here = Path(__file__).parent
    m, x = build(), example()
    if "tflite" in sys.argv[1:] or len(sys.argv) == 1:
        import litert_torch

        litert_torch.convert(m, (x,)).export(str(here / "tinynet.tflite"))
    if "coreml" in sys.argv[1:] or len(sys.argv) == 1:
        import coremltools as ct

        ep = torch.export.export(m, (x,)).run_decompositions({})
        ml = ct.convert(ep, minimum_deployment_target=ct.target.iOS17)
        ops = [{"operator": op.op_type, "outputs": [o.name for o in op.outputs]}
               for op in ml._mil_program.functions["main"].operations]
        (here / "tinynet_coreml_ops.json").write_text(json.dumps(ops, indent=1) + "\n")
    if "ort" in sys.argv[1:] or len(sys.argv) == 1:
        import tempfile

        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as td:
            onnx_path = Path(td) / "tinynet.onnx"
            torch.onnx.export(m, (x,), dynamo=True).save(str(onnx_path))
            so = ort.SessionOptions()
            so.enable_profiling, so.profile_file_prefix = True, str(Path(td) / "ort")
            so.intra_op_num_threads = 1
            s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            for _ in range(3):
                s.run(None, {s.get_inputs()[0].name: x.numpy()})
            trace = json.loads(Path(s.end_profiling()).read_text())
        (here / "ort_trace_tinynet.json").write_text(json.dumps(trace, indent=0) + "\n")
