"""Predicted latency for devices that are not attached: per-op features of the exported graph and a
calibrated per-device cost model.

* ``features`` / ``extract_mil`` / ``extract_tflite`` / ``extract_onnx``: one row per runtime op (kind,
  MACs, tensor sizes, rank, fusion, producers) from a Core ML ML Program, a ``.tflite`` or an ONNX graph;
* ``costmodel``: roofline per op with per-kind efficiencies, dispatch, fusion and accelerator fallback;
* ``calibrate`` / ``host``: fit it on published (phones) or measured (host) end-to-end latencies, with
  leave-one-family-out error; ``command``: ``hybridexport calibrate --device DEVICE``;
* ``runner``: the ``predicted`` runner, a Profile with per-op rows mapped to nn.Module paths.

The feature cache of the calibration models lives in ``data/`` (built by ``build_features``).
"""
