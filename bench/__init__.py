"""Microbenchmarks of the speccas ops and the report that renders their results.

``bench_verify.py`` and ``bench_sample.py`` append rows to ``bench/results/<op>_<device>.csv``;
``report.py`` turns those files into ``bench/results/REPORT.md`` and PNG plots. Shared timing,
provenance and CSV code lives in ``common.py``.
"""
