"""TFLite on the host CPU with ai-edge-litert's Interpreter (XNNPACK): end-to-end time only.

ai-edge-litert's Python API exposes no per-operator profiler (its profiling protos are for the
C++ ``benchmark_model`` tool), so this runner measures the whole ``invoke`` and reports a single
row for the model; per-op TFLite data comes from the android-adb runner (benchmark_model
``--enable_op_profiling``), which also works with a desktop ``benchmark_model`` build.
"""

from __future__ import annotations

from typing import Any

from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.bench.runners._common import (
    artifact,
    elevated_priority,
    host_environment,
    host_only,
    random_input,
    ticker,
    time_runs,
    version_of,
)
from hybridexport.modpath import ROOT


class LiteRTRunner(Runner):
    name = "host-litert"
    formats = ("tflite",)

    def availability(self, device: Any) -> tuple[bool, str]:
        return host_only(device, "ai_edge_litert", "ai-edge-litert")

    def run(self, request: BenchRequest) -> Profile:
        from ai_edge_litert.interpreter import Interpreter

        self.require(request.device)
        path = artifact(request, "tflite")
        it = Interpreter(model_path=str(path), num_threads=request.threads)
        it.allocate_tensors()
        for i, d in enumerate(it.get_input_details()):
            it.set_tensor(d["index"], random_input(d["shape"], d["dtype"].__name__, seed=i))
        with elevated_priority() as priority:
            total = time_runs(it.invoke, request.runs, request.warmup, ticker(request))
        stats = Stats.from_samples(total)
        profile = Profile(
            model=request.label,
            format="tflite",
            device=request.device.name,
            runner=self.name,
            obtained="measured",
            total_ms=stats,
            layers=[LayerRow(name="invoke", op_type="whole model", module=ROOT, compute_unit="cpu (xnnpack)",
                             ms=Stats.from_samples(total), share=1.0, module_source="op_table")],
            artifact_sha256=request.manifest.sha256 if request.manifest else "",
            input_shapes=[[int(s) for s in d["shape"]] for d in it.get_input_details()],
            environment=host_environment(request.threads, runtime="ai-edge-litert Interpreter",
                                         ai_edge_litert=version_of("ai-edge-litert"), runs=request.runs,
                                         warmup=request.warmup, priority=priority),
            method=("end-to-end only: Interpreter.invoke timed with perf_counter; ai-edge-litert has no per-op "
                    "profiler in Python (use the android-adb runner's benchmark_model --enable_op_profiling)"),
            notes=["one row for the whole model: LiteRT's Python API gives no per-operator times"],
        )
        return profile
