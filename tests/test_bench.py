"""Smoke test of the benchmarks and the report: each bench script in --dry mode on CPU (tiny
shapes, cheap providers, in-process so torch is imported once), the CSV columns, and the report."""

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import bench_sample, bench_verify, common, report  # noqa: E402


def _rows(path: Path):
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == common.COLUMNS, f"{path.name}: columns {reader.fieldnames} != {common.COLUMNS}"
        return list(reader)


def _measured(rows, op):
    got = [r for r in rows if r["median_us"]]
    assert got, f"no measured {op} rows: {rows}"
    for r in got:
        assert r["op"] == op
        assert float(r["median_us"]) > 0 and float(r["p20_us"]) <= float(r["p80_us"]), r
        assert float(r["gbps"]) > 0 and float(r["copy_gbps"]) > 0, r
        assert r["commit"] and r["date"] and r["device"], r
    return got


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    common_args = ["--dry", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert bench_verify.main(common_args + ["--providers", "reference,cpp", "--rules", "speculative,token_v3"]) == 0
    assert bench_sample.main(common_args + ["--providers", "reference,multinomial,argmax,cpp"]) == 0
    return out


def test_verify_csv(results):
    rows = _rows(next(results.glob("verify_*.csv")))
    got = _measured(rows, "verify")
    assert {r["rule"] for r in got} == {"speculative", "token_v3"}
    assert {r["provider"] for r in got} >= {"reference"}
    assert all(r["K"] == "2" and r["V"] == "1000" and r["dtype"] == "fp32" for r in got)
    assert all("mean_accepted=" in r["note"] for r in got)


def test_sample_csv(results):
    rows = _rows(next(results.glob("sample_*.csv")))
    got = _measured(rows, "sample")
    by = {(r["provider"], r["rule"]) for r in got}
    assert {("reference", "sample"), ("reference", "greedy"), ("multinomial", "sample"), ("argmax", "greedy")} <= by
    assert ("multinomial", "greedy") not in by and ("argmax", "sample") not in by


def test_report_renders(results):
    md = report.render(results, results / "REPORT.md")
    text = md.read_text()
    assert "## verify" in text and "## sample" in text
    header = next(line for line in text.splitlines() if line.startswith("| rule | B | K | V | accepted |"))
    assert "| reference |" in header, header
    pngs = sorted(p.name for p in results.glob("*.png"))
    assert len(pngs) == 4, pngs
    for name in pngs:
        assert f"]({name})" in text
        assert (results / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memory_cap_skips(tmp_path, capsys):
    """A point over --max-elems is skipped, and the run says so."""
    assert bench_sample.main(["--dry", "--device", "cpu", "--out", str(tmp_path), "--no-progress", "--providers",
                              "argmax", "--modes", "greedy", "--max-elems", "1500"]) == 0
    out = capsys.readouterr().out
    assert "skip greedy B=3 V=1000" in out and "skipped 1 points" in out
