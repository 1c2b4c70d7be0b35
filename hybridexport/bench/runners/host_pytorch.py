"""PyTorch eager on the host CPU: per-module time from forward pre/post hooks.

Method: a pre-hook and a post-hook on every module record ``time.perf_counter_ns``; a module's
*own* time is its inclusive time minus its children's, so the rows (one per module that does work
of its own, leaves and the functional code in parents' ``forward``) add up to the hooked forward.
Hooked and plain forwards alternate; the plain ones give the end-to-end times. Threads are fixed
with ``torch.set_num_threads`` for the run.
"""

from __future__ import annotations

import time
from typing import Any

from hybridexport.bench.profile import LayerRow, Profile, Stats
from hybridexport.bench.runners import BenchRequest, Runner
from hybridexport.bench.runners._common import (
    elevated_priority,
    host_environment,
    host_only,
    layer_summary,
    ticker,
    time_interleaved,
)
from hybridexport.errors import RunnerUnavailableError
from hybridexport.modpath import ROOT


class PyTorchEagerRunner(Runner):
    name = "host-pytorch"
    formats = ("pytorch",)

    def availability(self, device: Any) -> tuple[bool, str]:
        return host_only(device)

    def run(self, request: BenchRequest) -> Profile:
        import torch

        self.require(request.device)
        loaded = request.model
        if loaded is None:
            raise RunnerUnavailableError("the PyTorch eager runner needs a model, not an artifact; pass --format pytorch")
        module = loaded.module.eval()
        xs = loaded.example_inputs()
        names = {m: (n or ROOT) for n, m in module.named_modules()}
        classes = {m: type(m).__name__ for m in module.modules()}
        state = {"on": False, "stack": [], "run": {}}

        def pre(mod: Any, _inp: Any) -> None:
            if state["on"]:
                state["stack"].append([mod, time.perf_counter_ns(), 0])

        def post(mod: Any, _inp: Any, _out: Any) -> None:
            if not state["on"] or not state["stack"]:
                return
            m, t0, child = state["stack"].pop()
            incl = time.perf_counter_ns() - t0
            own = state["run"]
            own[m] = own.get(m, 0) + incl - child
            if state["stack"]:
                state["stack"][-1][2] += incl

        handles = [m.register_forward_pre_hook(pre) for m in module.modules()]
        handles += [m.register_forward_hook(post) for m in module.modules()]
        runs: list[dict[Any, int]] = []

        def plain() -> None:
            module(*xs)

        def hooked() -> None:
            state["on"], state["run"], state["stack"] = True, {}, []
            module(*xs)
            state["on"] = False
            runs.append(state["run"])

        old_threads = torch.get_num_threads()
        torch.set_num_threads(request.threads)
        try:
            cpu: list[float] = []
            with torch.inference_mode(), elevated_priority() as priority:
                total = time_interleaved(plain, hooked, request.runs, request.warmup, ticker(request), cpu)
        finally:
            torch.set_num_threads(old_threads)
            for h in handles:
                h.remove()
        measured = runs[request.warmup:]
        order = list(dict.fromkeys(m for r in measured for m in r))
        rows = [
            LayerRow(name=names[m], op_type=classes[m], module=names[m], compute_unit="cpu",
                     ms=Stats.from_samples([r.get(m, 0) / 1e6 for r in measured]), module_source="metadata")
            for m in order
        ]
        profile = Profile(
            model=loaded.name,
            format="pytorch",
            device=request.device.name,
            runner=self.name,
            obtained="measured",
            total_ms=Stats.from_samples(total),
            layers=rows,
            artifact_sha256=loaded.weights_sha256(),
            environment=host_environment(request.threads, runtime="pytorch eager", torch=torch.__version__,
                                         runs=request.runs, warmup=request.warmup, priority=priority),
            method=("PyTorch eager, forward pre/post hooks on every module (perf_counter_ns); each row is a module's "
                    "own time (inclusive minus children); total from alternating un-hooked forwards"),
            input_shapes=[list(s) for s in loaded.input_shapes],
        )
        profile.fill_shares()
        profile.extra.update(layer_summary(profile, cpu_ms=cpu))
        return profile
