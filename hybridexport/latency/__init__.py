"""The latency model: a per-op cost model of a device, applied to an artifact's op table.

* ``features``: feature tables (op-table rows of one model) and their compact committed form;
* ``costmodel``: roofline per op with per-kind efficiencies, dispatch, fusion, chaining and fallback;
* ``fallback``: which ops an accelerator cannot run;
* ``predictor``: a device's calibrated ``latency_model`` applied to one model's ops.

Calibration (fitting the parameters) lives above the bench stage, in :mod:`hybridexport.calibrate`;
the ``predicted`` runner (:mod:`hybridexport.bench.runners.predicted`) is the bench stage's user of this.
"""
