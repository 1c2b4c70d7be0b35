"""Parsers for what the benchmarking tools print or write.

Each parser takes the tool's text (or a path) and returns plain dataclasses; malformed or truncated
input raises :class:`hybridexport.errors.InputFileError` with one line naming the problem.
"""

from hybridexport.bench.parsers.benchmark_model import BenchmarkModelOutput, OpRow, parse_benchmark_model
from hybridexport.bench.parsers.devicectl import IOSDevice, parse_devicectl_devices
from hybridexport.bench.parsers.ort_trace import OrtTrace, parse_ort_trace

__all__ = [
    "BenchmarkModelOutput", "IOSDevice", "OpRow", "OrtTrace",
    "parse_benchmark_model", "parse_devicectl_devices", "parse_ort_trace",
]
