"""bench/bench_filters.py: its sort-based baseline filters what the spec filters, and a small run writes rows."""

from __future__ import annotations

import csv

import pytest
import torch

from bench import bench_filters as bf
from speccas_kernels import checks, reference


@pytest.mark.parametrize("name", list(bf.FILTERS))
def test_engine_filter_keeps_the_spec_set(name):
    """On logits without ties the baseline keeps exactly reference.filter_keep's entries (it is a fair baseline:
    same work, same result), and a cut-off one notch looser does not."""
    filt = bf.FILTERS[name]
    z = torch.randn(3, 2, 500, generator=torch.Generator().manual_seed(1)) * 2.5
    T = 0.7
    keep = reference.filter_keep(z, torch.full((3,), T), checks.Filters(**filt))
    got = torch.isfinite(bf.engine_filter(z, T, **filt))
    assert torch.equal(got, keep)
    nudged = {"top_k": lambda v: v + 1, "top_p": lambda v: v + 0.03, "min_p": lambda v: v - 0.01}
    if len(filt) == 1:  # negative control: the same filter one notch looser keeps another set
        (k, v), = filt.items()
        wrong = torch.isfinite(bf.engine_filter(z, T, **{k: nudged[k](v)}))
        assert not torch.equal(wrong, keep)
    assert not keep.all()


def test_small_run_writes_interleaved_rows(tmp_path):
    out = tmp_path / "f.csv"
    assert bf.main(["--backend", "reference", "--B", "1", "--V", "300", "--K", "2", "--filters", "top_p=0.9",
                    "--quick", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {(r["op"], r["provider"]) for r in rows} == {
        (op, p) for op in ("sample_filtered", "verify_filtered")
        for p in ("reference", "sort+reference", "reference no filter")}
    assert all(float(r["median_us"]) > 0 and "load" in r["note"] for r in rows)
