"""bench/gpu_suite.py, proven on the CPU: the dry run's steps, output layout and tables; a hung
step is stopped with its stacks in the log; the deadline skips steps and says so; the model join."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import gpu_suite  # noqa: E402

pytestmark = pytest.mark.xdist_group("gpu_suite")  # one xdist worker, one dry run of the suite (``dry``)

MODEL_ROWS = """kind,op,rule,B,K,V,dtype,predicted_us,version,date
model,verify,speculative,3,2,1000,float32,9.5,v1,2026-01-01
model,verify,speculative,3,2,1000,fp32,4.25,v2,2026-02-01
model,verify,token_v3,1,2,1000,fp32,3.75,v2,2026-02-01
note,verify,token_v3,3,2,1000,fp32,1.0,v2,2026-02-01
"""


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    """One dry run of the whole suite (about half a minute on a shared CPU)."""
    base = tmp_path_factory.mktemp("suite")
    model = base / "roofline_sm90.csv"
    model.write_text(MODEL_ROWS)
    out = base / "out"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--dry-run", "--out", str(out),
                        "--model", str(model)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"dry run failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    status = json.loads((out / "status.json").read_text())
    return out, r.stdout, {s["name"]: s for s in status["steps"]}, status


def test_dry_run_runs_every_step_in_order(dry):
    _, _, steps, status = dry
    assert list(steps) == list(gpu_suite.STEP_NAMES)
    assert status["dry_run"] is True
    expect = {"env": "ok", "build": "dry", "proofs": "dry", "tests": "ok", "bench_verify": "ok", "bench_sample": "ok",
              "compile_verify": "dry", "compile_sample": "dry", "grid_verify": "dry", "model": "ok", "report": "ok",
              "pack": "ok"}
    got = {name: steps[name]["status"] for name in expect}
    assert got == expect, got
    assert steps["wheels"]["status"] in ("ok", "skipped")
    build = steps["build"]["note"]
    assert build.startswith("would run: ") and "pip install --no-build-isolation" in build and "MAX_JOBS=16" in build
    proofs = steps["proofs"]["note"]
    assert "tests/test_gpu.py" in proofs and "'cuda or not cuda'" in proofs and "faulthandler_timeout=" in proofs
    assert "--junitxml=" in proofs
    assert steps["tests"]["note"].startswith("1 passed, 0 failed"), steps["tests"]["note"]
    assert "--providers triton,torch.compile " in steps["compile_verify"]["note"]
    for name in ("bench_verify", "bench_sample"):
        assert "wrote " in steps[name]["note"] and "0 provider failures" in steps[name]["note"], steps[name]
    assert status["env"]["source_digest"] == gpu_suite.source_digest()
    assert status["env"]["commit"] and status["env"]["torch"]


def test_dry_run_output_layout(dry):
    out, _, _, _ = dry
    entries = sorted(p.name for p in out.iterdir())
    assert all((out / n).is_file() for n in entries), f"a folder under the output: {entries}"
    assert len(entries) <= gpu_suite.MAX_OUT_FILES, entries
    csvs = [n for n in entries if n.endswith(".csv")]
    assert sorted(n.split("_")[0] for n in csvs) == ["sample", "verify"], entries
    assert set(entries) == {"summary.md", "status.json", "logs.tar.gz", "model_vs_measured.md", *csvs}
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    for want in ("logs/env.json", "logs/env.log", "logs/tests.log", "logs/junit_tests.xml", "logs/bench_verify.log",
                 "logs/bench_sample.log", "logs/model.log", "logs/REPORT.md"):
        assert want in names, f"{want} not in the archive: {sorted(names)}"
    import csv

    with (out / csvs[1]).open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["median_us"]]
    assert rows and all(r["device"] and r["commit"] and r["date"] for r in rows)
    assert all("timing=wall, 2 input sets" in r["note"] for r in rows), rows[0]["note"]


def test_dry_run_prints_the_summary_last(dry):
    out, stdout, steps, _ = dry
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    table = lines.index("| step | status | s | budget s | note |")
    assert not any(ln.startswith("[suite]") for ln in lines[table:]), "progress printed after the summary"
    assert lines[-1].startswith("Files: ") and "logs.tar.gz" in lines[-1] and "summary.md" in lines[-1]
    for name in gpu_suite.STEP_NAMES:
        assert any(ln.startswith(f"| {name} | {steps[name]['status']} |") for ln in lines[table:]), name
    assert (out / "summary.md").read_text().strip() == "\n".join(stdout.strip().splitlines()[-len(
        (out / "summary.md").read_text().strip().splitlines()):])
    assert "| rule | cpp fp32 B=3 |" in stdout  # the headline table of measured rows


def test_dry_run_model_table(dry):
    out, _, steps, _ = dry
    text = (out / "model_vs_measured.md").read_text()
    assert "model µs (model)" in text and "bench/roofline.py" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| verify |")]
    by_rule = {ln.split(" | ")[1]: ln.split(" | ") for ln in rows}
    assert set(by_rule) == {"speculative", "token_v3"}, rows
    assert by_rule["speculative"][6] == "4.25"  # the latest model version, not 9.5
    assert by_rule["token_v3"][2] == "1" and by_rule["token_v3"][6] == "3.75"  # kind=note rows are not the model
    assert "2 comparisons" in steps["model"]["note"]


def test_a_hung_step_is_stopped_with_its_stacks(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_suite, "KILL_GRACE_S", 3.0)
    pid_file = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
              "def waiting_for_the_kernel():\n    time.sleep(120)\n"
              "waiting_for_the_kernel()\n")
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    log = tmp_path / "hang.log"
    t0 = time.monotonic()
    status, rc, secs = gpu_suite.run_command([sys.executable, "-c", script], log, 2.0, env, cwd=tmp_path)
    assert status == "timeout" and rc != 0
    assert time.monotonic() - t0 < 30
    text = log.read_text()
    assert "still running after 2 s" in text
    assert "Fatal Python error: Aborted" in text and "waiting_for_the_kernel" in text, text[-2000:]
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed with its group (reaped by init shortly after)
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the step's child process {grandchild} outlived the timeout")


def test_hang_reports_name_the_backend():
    triton_dump = ("tests/test_bench.py ....\n+++++++++ Timeout +++++++++\n  File \"tests/test_triton.py\", line 9, in "
                   "test_verify_matches_reference\n    out.cpu()\n+++++++++ Timeout +++++++++\n")
    assert gpu_suite.hang_suspects(triton_dump) == ["triton"]
    crash = "[gw3] node down\nworker 'gw3' crashed while running 'tests/test_gpu.py::test_graph_replay[cuda]'\n"
    assert gpu_suite.hang_suspects(crash) == ["cuda"]
    abort = ("tests/test_native.py passed\n=== gpu_suite: still running after 150 s ===\nFatal Python error: Aborted\n"
             "  File \".../speccas_kernels/kernels/verify.py\", line 300 in launch_verify\n")
    assert gpu_suite.hang_suspects(abort) == ["triton"]  # only what follows the marker counts
    assert gpu_suite.hang_suspects("tests/test_triton.py ...... [100%]\n12 passed") == []


@pytest.fixture
def suite(tmp_path):
    """A dry-run Suite that has not run (its temporary log folder removed afterwards)."""
    import argparse

    args = argparse.Namespace(dry_run=True, out=str(tmp_path / "out"), deadline_s=100.0, steps=["env"],
                              model="none", keep_work=False)
    s = gpu_suite.Suite(args)
    yield s
    s.stop_background()
    shutil.rmtree(s.work, ignore_errors=True)


def test_a_backend_seen_hanging_is_left_out_of_the_benchmarks(suite):
    suite.hung = {"triton": "proofs"}
    step = next(s for s in gpu_suite.STEPS if s.name == "compile_verify")
    res = suite.step_compile_verify(step, 60.0)
    assert res.status == "dry" and "--providers torch.compile " in res.note
    assert "triton left out (hung in proofs)" in res.note
    suite.hung = {"triton": "proofs", "cuda": "tests"}
    step = next(s for s in gpu_suite.STEPS if s.name == "grid_verify")
    res = suite.step_grid_verify(step, 60.0)
    assert res.status == "skipped" and "cuda left out (hung in tests)" in res.note
    # FlashInfer whose background compile failed is left out too (its first call would compile again)
    suite.hung = {}
    suite.start_background("flashinfer_jit", [sys.executable, "-c", "raise SystemExit(2)"])
    keep, notes = suite._providers(["triton", "flashinfer", "hf"], 60.0)
    assert keep == ["triton", "hf"]
    assert notes == ["flashinfer left out (flashinfer_jit failed (exit code 2, see its log))"]


def test_background_jobs_are_waited_for_and_stopped(suite):
    suite.start_background("quick", [sys.executable, "-c", "print('built')"])
    suite.start_background("slow", [sys.executable, "-c", "import time; time.sleep(120)"])
    assert suite.wait_background("quick", 30) == "quick done"
    assert suite.wait_background("slow", 0.5).startswith("slow still running after")
    assert suite.wait_background("absent", 1) == ""
    proc = suite.background["slow"][0]
    suite.stop_background()
    assert proc.poll() is not None
    assert "built" in suite.log("quick").read_text()
    assert "stopped at the end of the suite" in suite.log("slow").read_text()


def test_a_failing_command_is_failed_not_timeout(tmp_path):
    status, rc, _ = gpu_suite.run_command([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "x.log", 30,
                                          dict(os.environ), cwd=tmp_path)
    assert (status, rc) == ("failed", 3)


def test_plan_timeout_holds_the_reserves_of_later_required_steps():
    steps = {s.name: s for s in gpu_suite.STEPS}
    later = [steps["bench_verify"], steps["compile_verify"], steps["model"], steps["pack"]]
    held = steps["bench_verify"].reserve_s + steps["model"].reserve_s  # optional steps are not held
    timeout, why = gpu_suite.plan_timeout(steps["tests"], 0.0, 1000.0, later)
    assert timeout == steps["tests"].budget_s and not why
    timeout, _ = gpu_suite.plan_timeout(steps["tests"], 0.0, held + 100.0, later)
    assert timeout == pytest.approx(100.0)
    timeout, why = gpu_suite.plan_timeout(steps["tests"], 0.0, held + steps["tests"].reserve_s - 1, later)
    assert timeout is None and why.startswith("deadline:") and f"{held:.0f} s held" in why


def test_deadline_skips_steps_and_says_so(tmp_path, capsys):
    rc = gpu_suite.main(["--dry-run", "--out", str(tmp_path), "--deadline-s", "3",
                         "--steps", "env,tests,compile_verify,model,pack"])
    out = capsys.readouterr().out
    status = json.loads((tmp_path / "status.json").read_text())
    got = {s["name"]: s for s in status["steps"]}
    assert [s for s in got] == ["env", "tests", "compile_verify", "model", "pack"]
    for name in ("env", "tests", "compile_verify", "model"):
        assert got[name]["status"] == "skipped" and got[name]["note"].startswith("deadline:"), got[name]
    assert got["pack"]["status"] == "ok"
    assert "Skipped at the deadline: env, tests, compile_verify, model." in out
    assert rc == 0  # skipped is not failed


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_without_a_gpu_the_gpu_steps_are_skipped_and_the_run_fails(tmp_path, capsys):
    rc = gpu_suite.main(["--out", str(tmp_path), "--steps", "env,build,tests,bench_verify,model",
                         "--model", str(tmp_path / "none.csv")])
    got = {s["name"]: s for s in json.loads((tmp_path / "status.json").read_text())["steps"]}
    assert got["env"]["status"] == "failed" and "no CUDA device" in got["env"]["note"]
    for name in ("build", "tests", "bench_verify"):
        assert got[name]["status"] == "skipped" and "no CUDA device" in got[name]["note"], got[name]
    assert got["model"]["status"] == "skipped" and got["pack"]["status"] == "ok"
    assert rc == 1
    assert "| env | FAILED |" in capsys.readouterr().out


def test_model_step_says_when_the_model_is_absent(tmp_path):
    assert gpu_suite.main(["--dry-run", "--out", str(tmp_path), "--steps", "model",
                           "--model", str(tmp_path / "nothing.csv")]) == 0
    got = {s["name"]: s for s in json.loads((tmp_path / "status.json").read_text())["steps"]}
    assert got["model"]["status"] == "skipped" and "is absent" in got["model"]["note"]
    assert not (tmp_path / "model_vs_measured.md").exists()


def test_steps_option_rejects_unknown_names():
    with pytest.raises(SystemExit, match="--steps: unknown bogus"):
        gpu_suite.parse_steps("env,bogus")


def test_log_summary_reads_a_cut_short_verbose_run():
    """A tests step killed by its timeout leaves no junit XML; its verbose log still says what finished (xdist's
    ``[gwN] [ p%] WORD id`` lines and plain ``id WORD`` ones). The control: a quiet log (dots) counts nothing."""
    text = "\n".join([
        "[gw0] [  1%] PASSED tests/test_a.py::test_one ",
        "[gw1] [  2%] FAILED tests/test_a.py::test_two[cuda] ",
        "[gw1] [  3%] SKIPPED tests/test_b.py::test_three ",
        "[gw0] [  4%] ERROR tests/test_b.py::test_four ",
        "tests/test_c.py::test_five PASSED                        [ 50%]",
        "tests/test_c.py::test_six FAILED                         [100%]",
        "collected 6 items / PASSED in the text of a message, not a result line",
    ])
    s = gpu_suite.log_summary(text)
    assert (s["passed"], s["failed"], s["errors"], s["skipped"]) == (2, 2, 1, 1), s
    assert s["failed_ids"] == ["tests/test_a.py::test_two[cuda]", "tests/test_b.py::test_four",
                               "tests/test_c.py::test_six"], s
    quiet = gpu_suite.log_summary("......F..s.. [ 40%]\n")
    assert (quiet["passed"], quiet["failed"], quiet["failed_ids"]) == (0, 0, []), quiet


def test_junit_summary(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="5" failures="1" errors="1" skipped="1">'
                   '<testcase classname="tests.test_a" name="test_ok"/>'
                   '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
                   '<testcase classname="tests.test_b" name="test_err"><error message="y"/></testcase>'
                   '</testsuite></testsuites>')
    s = gpu_suite.junit_summary(xml)
    assert (s["tests"], s["passed"], s["failures"], s["errors"], s["skipped"]) == (5, 2, 1, 1, 1)
    assert s["failed_ids"] == ["tests.test_a::test_bad", "tests.test_b::test_err"]
    assert gpu_suite.junit_note(s).startswith("2 passed, 1 failed, 1 errors, 1 skipped; first failing: tests.test_a")
    assert "no junit XML" in gpu_suite.junit_note(gpu_suite.junit_summary(tmp_path / "absent.xml"))


def test_idle_verdict():
    idle = "NVIDIA H200, 580.159.04, 0 %, 1 MiB, 143771 MiB, 345 MHz, 3201 MHz, 31, 75.00 W"
    assert gpu_suite.idle_verdict(idle, "") == "idle"
    busy = "NVIDIA H200, 580.159.04, 87 %, 52000 MiB, 143771 MiB, 1980 MHz, 3201 MHz, 60, 500.00 W"
    verdict = gpu_suite.idle_verdict(busy, "")
    assert verdict.startswith("busy") and "87%" in verdict and "52000 MiB" in verdict
    assert "processes: 1234, python3" in gpu_suite.idle_verdict(idle, "1234, python3, 900 MiB")
    assert gpu_suite.idle_verdict("(FileNotFoundError)", "").startswith("unknown")


def test_the_documented_run_call_fits_the_device_tool():
    doc = gpu_suite.__doc__
    assert f"command:   {gpu_suite.RUN_COMMAND}" in doc and len(gpu_suite.RUN_COMMAND) <= 2000
    assert f"carry:     {json.dumps(gpu_suite.RUN_CARRY)}" in doc and len(gpu_suite.RUN_CARRY) <= 8
    assert f"timeout_s: {gpu_suite.RUN_TIMEOUT_S}" in doc
    assert gpu_suite.DEADLINE_S + 60 <= gpu_suite.RUN_TIMEOUT_S <= 600
    assert gpu_suite.DEADLINE_S + gpu_suite.STEPS[-1].budget_s < 8 * 60  # "under 8 minutes"
    assert sum(s.reserve_s for s in gpu_suite.STEPS if not s.optional) < gpu_suite.DEADLINE_S
    in_git = shutil.which("git") is not None and subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True).returncode == 0
    for path in gpu_suite.RUN_CARRY if in_git else ():  # carried paths are ignored: wheels are never committed
        r = subprocess.run(["git", "check-ignore", "-q", f"{path}/x.whl"], cwd=ROOT)
        assert r.returncode == 0, f"{path} is not ignored by git"
    for step in gpu_suite.STEPS:  # the docstring's table states every step and its budget
        assert any(ln.startswith(step.name) and f"{step.budget_s:.0f} s" in ln for ln in doc.splitlines()), step.name
