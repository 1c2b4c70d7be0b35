"""Report stage: compare two latency runs and render the result.

``compare.compare(base, new)`` → :class:`~hybridexport.report.compare.Comparison` (noise-aware
verdicts, per-layer deltas); renderers: ``text`` (terminal), ``markdown`` (CI summary / PR comment),
``html`` (self-contained, inline SVG charts), ``junit`` (XML), ``model_explorer`` (node-data overlay).
``command`` is the ``hybridexport compare`` subcommand.
"""
