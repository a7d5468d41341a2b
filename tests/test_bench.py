"""Smoke test of the benchmarks and the report: each bench script in --dry mode on CPU (tiny
shapes, cheap providers, in-process so torch is imported once), the CSV columns, and the report."""

import csv
import sys
import time
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


def test_interleaved_rotated_timing_on_cpu(tmp_path):
    """--interleave --rotate 2: providers timed together over two input sets; the rows say so."""
    assert bench_sample.main(["--dry", "--device", "cpu", "--out", str(tmp_path), "--no-progress", "--providers",
                              "argmax,multinomial", "--interleave", "--rotate", "2", "--preset", "suite"]) == 0
    rows = _measured(_rows(next(tmp_path.glob("sample_*.csv"))), "sample")
    assert {(r["provider"], r["rule"]) for r in rows} == {("argmax", "greedy"), ("multinomial", "sample")}
    assert all("timing=wall, 2 input sets" in r["note"] for r in rows), rows[0]["note"]
    # the suite preset puts the large batch first
    assert [r["B"] for r in rows][:2] == ["3", "3"]


def test_measure_interleaved_alternates_providers_and_sets():
    import torch

    calls = []

    def fn(name, s, pause):
        def call():
            calls.append((name, s))
            t = time.perf_counter()
            while time.perf_counter() - t < pause:
                pass
        return call

    fns = {"slow": [fn("slow", 0, 2e-3), fn("slow", 1, 2e-3)], "fast": [fn("fast", 0, 2e-4), fn("fast", 1, 2e-4)]}
    timings, errors = common.measure_interleaved(fns, torch.device("cpu"), graph={}, rounds=6, sample_s=1e-3,
                                                 budget_s=5.0)
    assert not errors
    assert timings["slow"].median_us > 3 * timings["fast"].median_us, timings
    assert timings["slow"].median_us >= 1500  # per call, not per sample of several calls
    assert timings["slow"].mode == "wall, 2 input sets"
    assert {s for _, s in calls} == {0, 1}
    # rounds alternate the provider that goes first: both orders occur among consecutive runs
    firsts = [calls[i][0] for i in range(1, len(calls)) if calls[i][0] != calls[i - 1][0]]
    assert "slow" in firsts and "fast" in firsts


def test_measure_interleaved_reports_a_failing_provider():
    import torch

    state = {"n": 0}

    def flaky():
        state["n"] += 1
        if state["n"] > 2:
            raise RuntimeError("device lost")

    timings, errors = common.measure_interleaved({"ok": [lambda: None], "flaky": [flaky]}, torch.device("cpu"),
                                                 graph={}, rounds=4)
    assert "ok" in timings and "flaky" not in timings
    assert errors["flaky"] == "RuntimeError: device lost"


def test_deadline_stops_the_grid(tmp_path, capsys):
    assert bench_verify.main(["--dry", "--device", "cpu", "--out", str(tmp_path), "--no-progress", "--providers",
                              "reference", "--rules", "speculative,token_v3", "--deadline-s", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert "4 points not run" in out and "--deadline-s" in out
    assert not any(r["median_us"] for f in tmp_path.glob("verify_*.csv") for r in _rows(f))


def test_suite_points_put_the_model_claims_first():
    grid = dict(B=[1, 8, 64, 256], K=[1, 4, 8], V=[32000, 128256, 151936], dtypes=["fp32", "bf16"],
                rules=["speculative", "opt", "token_v3"])
    pts = bench_verify.suite_points(grid)
    first = [(p.B, p.K, p.V) for p in pts[:6]]
    assert set(first) == {(64, 4, 151936)} and {(p.rule, p.dtype) for p in pts[:6]} == {
        (r, d) for r in grid["rules"] for d in grid["dtypes"]}
    assert [(p.B, p.K, p.V, p.dtype) for p in pts[6:9]] == [(1, 4, 151936, "fp32")] * 3
    assert {(p.B, p.K, p.V, p.dtype) for p in pts[9:12]} == {(1, 4, 151936, "bf16")}
    assert len(pts) == len(set(pts))
    assert {p.V for p in pts} == {32000, 128256, 151936}


# ---- the model beside the measurement --------------------------------------------------------------

def _measured_row(**kw):
    row = dict(op="verify", provider="triton", rule="speculative", B="64", K="4", V="151936", dtype="fp32",
               median_us="100", p20_us="90", p80_us="110", gbps="3000", copy_gbps="4000", device="NVIDIA H200",
               commit="abc", date="2026-01-01", note="timing=events, 1 input set")
    row.update(kw)
    return row


def test_model_join_tolerates_missing_columns(tmp_path):
    model = tmp_path / "m.csv"
    # no op column, no kind column, dtype spelled out, a provider column: per-kernel predictions
    model.write_text("Rule,B,K,V,DType,Provider,predicted_us\nspeculative,64,4,151936,float32,triton,80\n"
                     "speculative,64,4,151936,float32,cuda,50\n")
    rows = [_measured_row(), _measured_row(provider="cuda", median_us="75", gbps="4000"),
            _measured_row(provider="reference", median_us="900"), _measured_row(B="8")]
    text = "\n".join(report.model_vs_measured(rows, model))
    table = [ln for ln in text.splitlines() if ln.startswith("| verify |")]
    assert len(table) == 1, text  # B=8 has no model point; the reference is not a speccas kernel
    cells = table[0].split(" | ")
    assert cells[6:9] == ["80", "100", "1.25x"] and cells[10] == "events", cells  # triton: model, measured, ratio
    assert cells[11:14] == ["50", "75", "1.50x"] and cells[14] == "100%", cells  # cuda
    assert "triton model µs (model)" in text and "2 comparisons" in text


def test_model_join_says_when_the_device_is_not_the_modelled_machine(tmp_path):
    """An H100's table carries a line naming the model's machine and both copy bandwidths; an H200's has none."""
    from bench import roofline

    model = tmp_path / "m.csv"
    model.write_text("kind,op,rule,B,K,V,dtype,predicted_us\nmodel,verify,speculative,64,4,151936,fp32,80\n")
    h100 = _measured_row(device="NVIDIA H100 80GB HBM3", copy_gbps="2950")
    text = "\n".join(report.model_vs_measured([_measured_row(), h100], model))
    at = text.index("### NVIDIA H200")  # (devices in name order: H100's table first)
    assert "not of this device" not in text[at:] and "| verify | speculative |" in text[at:]
    note = next(line for line in text[:at].splitlines() if "not of this device" in line)
    assert "2950 GB/s" in note and f"{report.MODEL_COPY_GBPS:.0f}" in note and report.MODEL_DEVICE in note, note
    # with the H100's own model written beside it, the H100 is read against that one and no note says otherwise
    (tmp_path / roofline.H100_CSV_PATH.name).write_text(
        "kind,op,rule,B,K,V,dtype,predicted_us\nmodel,verify,speculative,64,4,151936,fp32,125\n")
    text = "\n".join(report.model_vs_measured([_measured_row(), h100], model))
    at = text.index("### NVIDIA H200")
    assert "not of this device" not in text
    assert f"{roofline.H100_CSV_PATH.name}`, the same model with the H100's constants" in text[:at]
    h100_row = next(line for line in text[:at].splitlines() if line.startswith("| verify |")).split(" | ")
    assert h100_row[6:9] == ["125", "100", "0.80x"], h100_row  # the H100 model's 125 us, not the H200's 80
    h200_row = next(line for line in text[at:].splitlines() if line.startswith("| verify |")).split(" | ")
    assert h200_row[6:9] == ["80", "100", "1.25x"], h200_row
    # the report's constants are the model's machines
    assert report.MODEL_DEVICE in roofline.H200.name and report.MODEL_COPY_GBPS == roofline.H200.copy_bw / 1e9
    assert [(m, f, c) for m, f, c in report.MODEL_MACHINES if m == "H100"] == [
        ("H100", roofline.H100_CSV_PATH.name, roofline.H100.copy_bw / 1e9)] and "H100" in roofline.H100.name


def test_model_join_skips_cpu_rows_and_says_why_when_unusable(tmp_path):
    model = tmp_path / "m.csv"
    model.write_text("kind,op,rule,B,K,V,dtype,predicted_us\nmodel,verify,speculative,64,4,151936,fp32,80\n")
    cpu = _measured_row(device="AMD EPYC (2 threads)", provider="cpp")
    assert "No measured point" in "\n".join(report.model_vs_measured([cpu], model))
    assert "| verify | speculative |" in "\n".join(report.model_vs_measured([cpu], model, include_cpu=True))
    bad = tmp_path / "bad.csv"
    bad.write_text("op,rule,B,time\nverify,speculative,64,3\n")
    assert "has no predicted_us" in "\n".join(report.model_vs_measured([_measured_row()], bad))
    assert "is absent" in "\n".join(report.model_vs_measured([_measured_row()], tmp_path / "none.csv"))
