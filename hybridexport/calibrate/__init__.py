"""Calibration: fit each device's latency model (:mod:`hybridexport.latency`) on observed latencies.

* ``catalog``: published model names → models we can build, and the rows each device uses;
* ``build`` / ``build_features`` / ``store``: the calibration models converted through ``convert`` in
  deployment form, and the committed cache of their op tables (``data/``);
* ``fit``: the fit (published phone rows) with leave-one-family-out held-out error;
* ``host`` / ``host_layers``: the host, measured here end to end and per node;
* ``profiles``: the ``calibration`` and ``latency_model`` keys of a device profile;
* ``command``: ``hybridexport calibrate --device DEVICE``.
"""
