"""The one command for a lent GPU: build, test, prove, benchmark, and put the static model beside
the measurement, in under 8 minutes on an H200, everything under one output folder.

The `run` call (the device tool; nothing else to type there)::

    command:   SPECCAS_COMMIT=COMMIT PYTHONUNBUFFERED=1 python3 bench/gpu_suite.py --out "$OUT"
    carry:     [".whl"]
    timeout_s: 540
    kind:      nvidia-h200 where it is offered (the machine the static model is of); an H100 runs the
               same suite, and model_vs_measured.md then says under its table that the machines differ

COMMIT is the short hash of the checkout that travels (`git rev-parse --short HEAD`, with `-dirty`
when `git status --porcelain` shows changes): the device machine gets the files without `.git`.
The suite also records a digest of the sources (`python bench/gpu_suite.py --digest` here prints
the same digest for this tree). The suite's own deadline is 440 s; the 100 s more of timeout_s
cover the kill grace of steps that time out, the packing, and Python's start. Machine start
(1-2 minutes) comes on top: about 10 of the session's 15 device minutes, which leaves no time for a second full run; call `give_back` at
once afterwards, or rerun only the steps that failed (`--steps build,tests,...`, their budgets
in STEPS below).

FlashInfer (optional; the benchmark rows say "unavailable" without it). PyPI has wheels of
flashinfer-python from 0.5.0 on (pure Python; its kernels compile on first use with the machine's
nvcc); the newest, 0.7.4, is 101 MB, over the 64 MiB a call may carry. 0.6.0 is 7.5 MB, has
`chain_speculative_sampling` and `sampling_from_logits`, and imports with what the machine has
(torch, numpy, nvidia-ml-py, einops, ...) plus apache-tvm-ffi (3.3 MB); seen importing on a CPU
here, not yet on the device: its sampling module compiles there in the background during the build
(the benchmarks leave FlashInfer out, and say so, if that fails). Fetch both here, in the root of
the checkout that travels (`.whl/` is ignored by git; never commit wheels)::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl flashinfer-python==0.6.0 apache-tvm-ffi==0.1.15.post2

The suite installs whatever `.whl/*.whl` holds into a private folder (`pip --target`, no index,
no dependencies) and puts it on the PYTHONPATH of every step; torch is never installed there.

Steps (name, budget on an H200; `*`: optional, skipped first when the deadline nears):

====================  ======  ==========================================================================
env                   20 s    GPU name, driver, torch/triton/CUDA/nvcc versions, commit, source digest;
                              whether the GPU is idle (utilization, memory in use, other processes)
wheels*               30 s    install the carried `.whl/*.whl` (FlashInfer) into a private folder, and
                              start compiling FlashInfer's sampling module in the background (its nvcc
                              runs beside the extension build; the benchmarks wait for it)
build                 150 s   `pip install --no-build-isolation --no-deps -e .` (MAX_JOBS=16, sm_90),
                              then `setup.py build_ext --inplace` if that failed; a failed build leaves
                              the Triton steps running (the `cuda` provider and tests then skip)
proofs                75 s    tests/test_gpu.py: no host syncs (sync debug mode "error"), CUDA-graph
                              replay draws new tokens, back-to-back stress and multi-stream determinism
tests                 150 s   the whole suite on CUDA, `-m "cuda or not cuda"`, without TRITON_INTERPRET,
                              parallel where pytest-xdist is installed, per-test timeout (tests/test_roofline.py,
                              the CPU-side static model, skips itself there: it runs kernels under the interpreter)
bench_verify          120 s   verify: triton, cuda, the eager reference, transformers' _speculative_sampling
                              and FlashInfer (these two: rule speculative) at the suite's key points, most
                              important first (`bench_verify.suite_points`), until its deadline
bench_sample          40 s    sample: triton, cuda, reference, multinomial, argmax, FlashInfer
compile_verify*       90 s    verify: triton beside torch.compile(reference) (compiles take most of it)
compile_sample*       30 s    sample: triton beside torch.compile(reference)
grid_verify*          120 s   verify: triton and cuda over the model's whole grid, until the deadline
model                 20 s    model_vs_measured.md: the static model (bench/results/roofline_sm90.csv,
                              kind=model) beside the measurement; skipped, and said so, when absent
report                20 s    REPORT.md of this run's rows (into the log archive)
pack                  10 s    logs, junit XML, env.json and REPORT.md into logs.tar.gz
====================  ======  ==========================================================================

Every GPU step runs in its own process group under a timeout with faulthandler on: a step past
its time gets SIGABRT first (Python prints every thread's stack into the step's log: where a
kernel hung), then SIGKILL; its status reads `timeout`, its log tail is printed, and the next
step runs. Tests also carry a per-test timeout (pytest-timeout, thread method) when installed.

Output folder (`$OUT` when set, else `build/gpu_suite`), at most 8 files, no subfolders:
`summary.md` (the table printed last), `status.json` (each step: status, seconds, budget, note,
command), `verify_<device>.csv` and `sample_<device>.csv` (benchmark rows: copy these into
bench/results/), `model_vs_measured.md`, `logs.tar.gz` (every step's log, junit XML, env.json,
REPORT.md). `status.json`, `summary.md` and `logs.tar.gz` are rewritten after every step, so a
run cut short still brings back what it did.

`--dry-run` (CPU, used by tests/test_gpu_suite.py): the same steps in the same order; those that
need a GPU or a compiler report "would run: <command>", the others run with tiny shapes and CPU
providers (a one-test pytest with the same flags, the benchmarks with `--dry`, the model join
with CPU rows), so the orchestration, the output layout and the tables are proven here.

    python bench/gpu_suite.py --dry-run                       # here, on the CPU
    python bench/gpu_suite.py --steps env,build,proofs        # a subset, on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_CSV = REPO_ROOT / "bench" / "results" / "roofline_sm90.csv"
LOCAL_OUT = REPO_ROOT / "build" / "gpu_suite"
DEADLINE_S = 440.0
WHEELS = REPO_ROOT / ".whl"
MAX_OUT_FILES = 8  # what comes back from $OUT
KILL_GRACE_S = 5.0  # after SIGABRT (stacks dumped), before SIGKILL

# Compiles FlashInfer's sampling module (JIT, nvcc) so the benchmarks find it built.
FLASHINFER_PREWARM = ("from flashinfer.sampling import get_sampling_module; get_sampling_module(); "
                      "print('flashinfer sampling module built')")

RUN_COMMAND = 'SPECCAS_COMMIT=COMMIT PYTHONUNBUFFERED=1 python3 bench/gpu_suite.py --out "$OUT"'
RUN_CARRY = [".whl"]
RUN_TIMEOUT_S = 540


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    budget_s: float  # timeout on an H200
    reserve_s: float  # the least time worth starting it with
    optional: bool = False
    needs_gpu: bool = True  # in --dry-run: "would run" unless the step has a CPU form


STEPS = (
    Step("env", 20, 5, needs_gpu=False),
    Step("wheels", 30, 5, optional=True, needs_gpu=False),
    Step("build", 150, 60),
    Step("proofs", 75, 30),
    Step("tests", 150, 60),
    Step("bench_verify", 120, 45),
    Step("bench_sample", 40, 20),
    Step("compile_verify", 90, 40, optional=True),
    Step("compile_sample", 30, 15, optional=True),
    Step("grid_verify", 120, 30, optional=True),
    Step("model", 20, 5, needs_gpu=False),
    Step("report", 20, 5, needs_gpu=False),
    Step("pack", 10, 0, needs_gpu=False),
)
STEP_NAMES = tuple(s.name for s in STEPS)


@dataclasses.dataclass
class Result:
    name: str
    status: str  # ok, failed, timeout, skipped, dry
    seconds: float = 0.0
    budget_s: float = 0.0
    note: str = ""
    command: str = ""
    log: str = ""


# ----------------------------------------------------------------------------------------------
# Running one command


def run_command(cmd: Sequence[str], log_path: Path, timeout_s: float, env: Dict[str, str],
                cwd: Path = REPO_ROOT) -> tuple:
    """Run ``cmd`` in its own process group, output appended to ``log_path``. Past ``timeout_s`` the
    group gets SIGABRT (with PYTHONFAULTHANDLER set, Python processes print every thread's stack:
    where a kernel hung), then SIGKILL after ``KILL_GRACE_S``; processes it leaves behind are ended
    with it either way. Returns (status, return code, seconds):
    status ``ok`` (return code 0), ``failed`` or ``timeout``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"$ {_shell(cmd)}\n(timeout {timeout_s:.0f} s)\n".encode())
        log.flush()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            log.write(f"\n=== gpu_suite: still running after {timeout_s:.0f} s: SIGABRT to its process group "
                      f"(stacks below), SIGKILL {KILL_GRACE_S:.0f} s later ===\n".encode())
            log.flush()
            _signal_group(proc.pid, signal.SIGABRT)
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)  # children left behind, too
            proc.wait()
            return "timeout", proc.returncode, time.monotonic() - start
    _signal_group(proc.pid, signal.SIGKILL)  # whatever it left running (a compiler, a worker) goes with it
    return ("ok" if rc == 0 else "failed"), rc, time.monotonic() - start


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _shell(cmd: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(str(c)) for c in cmd)


HANG_MARKERS = ("Timeout +++", "=== gpu_suite: still running after", "crashed while running")
HANG_SIGNS = {  # where a stack printed at a hang points: the backend under suspicion
    "triton": ("test_triton.py", "triton_backend.py", "kernels/verify.py", "kernels/sample.py", "[triton"),
    "cuda": ("test_native.py", "speccas_kernels/native.py", "[cuda"),
}


def hang_suspects(log_text: str) -> List[str]:
    """The speccas GPU backends a log's hang reports point at (from the first hang marker on:
    pytest-timeout's dump, the suite's SIGABRT dump or xdist's crashed-worker line)."""
    at = min((i for i in (log_text.find(m) for m in HANG_MARKERS) if i >= 0), default=-1)
    if at < 0:
        return []
    text = log_text[at:]
    return [name for name, signs in HANG_SIGNS.items() if any(sign in text for sign in signs)]


def tail(path: Path, lines: int = 25) -> List[str]:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return text[-lines:]


def plan_timeout(step: Step, now: float, deadline: float, later: Sequence[Step]) -> tuple:
    """(timeout in seconds, or None to skip; why skipped). A step gets its budget, cut to what is
    left before the deadline once the reserves of the required steps after it are set aside; it
    is skipped when that is under its own reserve."""
    held = sum(s.reserve_s for s in later if not s.optional)
    avail = deadline - now - held
    if avail < max(step.reserve_s, 1.0):
        return None, (f"deadline: {max(avail, 0):.0f} s left after the {held:.0f} s held for the required steps "
                      f"after it; it needs {step.reserve_s:.0f} s")
    return min(step.budget_s, avail), ""


# ----------------------------------------------------------------------------------------------
# Environment probe (runs in a child: the suite itself never imports torch or touches the GPU)


def source_digest(root: Path = REPO_ROOT) -> str:
    """sha256 (first 12 hex digits) over the sources that decide a measurement: the kernels, csrc,
    the decode loop, the benchmarks and tests, setup.py and pyproject.toml (paths and contents,
    sorted; caches, built objects and results excluded)."""
    h = hashlib.sha256()
    files = [root / "setup.py", root / "pyproject.toml"]
    for sub in ("speccas_kernels", "csrc", "python", "bench", "tests"):
        files += [p for p in (root / sub).rglob("*") if p.is_file()]
    for p in sorted(set(files)):
        rel = p.relative_to(root).as_posix()
        if "__pycache__" in rel or rel.startswith("bench/results/") or p.suffix in (".so", ".pyc", ".o"):
            continue
        if not p.exists():
            continue
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def probe_env(out_json: Path) -> int:
    """Write env.json: versions, the GPU and whether it is idle, the commit and the source digest."""
    info: Dict[str, object] = {"python": sys.version.split()[0], "executable": sys.executable,
                               "source_digest": source_digest()}
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from bench import common

        info["commit"] = common.git_commit()
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        info["commit"] = f"unknown ({type(e).__name__})"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            free, total = torch.cuda.mem_get_info(0)
            info.update(gpu=props.name, sm=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                        l2_mb=round(getattr(props, "L2_cache_size", 0) / 2**20, 1), gpu_mem_gib=round(total / 2**30, 1),
                        gpu_free_gib=round(free / 2**30, 1))
    except Exception as e:  # noqa: BLE001
        info["torch"] = f"import failed: {e}"
    for mod in ("triton", "transformers", "flashinfer"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            info[mod] = f"not importable ({type(e).__name__})"
    info["nvcc"] = _first_line(["nvcc", "--version"], pick="release")
    smi = _first_line(["nvidia-smi", "--query-gpu=name,driver_version,utilization.gpu,memory.used,memory.total,"
                       "clocks.sm,clocks.mem,temperature.gpu,power.draw", "--format=csv,noheader"])
    info["nvidia_smi"] = smi
    apps = _first_line(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
                       all_lines=True)
    info["gpu_processes"] = apps
    info["idle"] = idle_verdict(smi, apps)
    out_json.write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return 0


def idle_verdict(smi: str, apps: str) -> str:
    """'idle' or 'busy: <why>' from nvidia-smi's query lines ('' when unavailable: 'unknown')."""
    if not smi or smi.startswith("("):
        return "unknown (no nvidia-smi)"
    parts = [p.strip() for p in smi.split(",")]
    why = []
    try:
        util = float(parts[2].split()[0])
        used = float(parts[3].split()[0])
        if util > 5:
            why.append(f"utilization {util:.0f}%")
        if used > 1024:
            why.append(f"{used:.0f} MiB in use")
    except (IndexError, ValueError):
        return f"unknown (nvidia-smi said {smi!r})"
    if apps and not apps.startswith("("):
        why.append(f"processes: {apps.replace(chr(10), '; ')}")
    return "idle" if not why else "busy: " + ", ".join(why)


def _first_line(cmd: Sequence[str], pick: str = "", all_lines: bool = False) -> str:
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"({type(e).__name__})"
    lines = [ln.strip() for ln in (r.stdout or "").splitlines() if ln.strip()]
    if pick:
        lines = [ln for ln in lines if pick in ln] or lines
    if all_lines:
        return "\n".join(lines)
    return lines[0] if lines else ""


# ----------------------------------------------------------------------------------------------
# junit


def junit_summary(path: Path) -> Dict[str, object]:
    """Counts (tests, failures, errors, skipped) and the first failing test ids from a junit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return {"error": f"no junit XML ({type(e).__name__})"}
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {k: sum(int(s.get(k, 0) or 0) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    counts["failed_ids"] = failed[:10]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


_RESULT_LINE = re.compile(r"^(?:\[gw\d+\] \[\s*\d+%\] (PASSED|FAILED|ERROR|SKIPPED) (\S+)"
                          r"|(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)\b)", re.M)


def log_summary(text: str) -> Dict[str, object]:
    """Counts and the first failing ids from a verbose pytest log (``-v``, with or without xdist's ``[gwN]``
    prefix): what a run cut short by its step's timeout, which leaves no junit XML, still tells."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    key = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped"}
    failed = []
    for m in _RESULT_LINE.finditer(text):
        word, test = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        counts[key[word]] += 1
        if word in ("FAILED", "ERROR") and len(failed) < 10:
            failed.append(test)
    return {**counts, "failed_ids": failed}


def junit_note(summary: Dict[str, object]) -> str:
    if "error" in summary:
        return str(summary["error"])
    note = (f"{summary['passed']} passed, {summary['failures']} failed, {summary['errors']} errors, "
            f"{summary['skipped']} skipped")
    if summary["failed_ids"]:
        note += "; first failing: " + ", ".join(summary["failed_ids"][:3])
    return note


# ----------------------------------------------------------------------------------------------
# The suite


class Suite:
    def __init__(self, args):
        self.args = args
        self.dry = args.dry_run
        self.py = sys.executable
        self.out = Path(args.out or os.environ.get("OUT") or LOCAL_OUT).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="speccas-suite-"))
        self.start = time.monotonic()
        self.deadline = self.start + args.deadline_s
        self.results: List[Result] = []
        self.env_info: Dict[str, object] = {}
        self.selected = [s for s in STEPS if s.name in args.steps or s.name == "pack"]
        self.env = self._child_env()
        self.background: Dict[str, tuple] = {}  # name -> (process, log path, start time)
        self.no_gpu = False  # set by the env step when torch sees no CUDA device (not in --dry-run)
        self.hung: Dict[str, str] = {}  # backend -> the step whose hang report points at it

    # -- environment of every child --------------------------------------------------------------
    def _child_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        if not self.dry:
            env.pop("TRITON_INTERPRET", None)  # the real GPU, never the interpreter
        paths = [str(REPO_ROOT), str(REPO_ROOT / "python")]  # importable even when the install fails
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1",
                   MAX_JOBS=env.get("MAX_JOBS", "16"), TORCH_CUDA_ARCH_LIST=env.get("TORCH_CUDA_ARCH_LIST", "9.0"))
        return env

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    # -- running -------------------------------------------------------------------------------------
    def run(self) -> int:
        print(f"[suite] {'DRY RUN (CPU) ' if self.dry else ''}output -> {self.out}; "
              f"deadline {self.args.deadline_s:.0f} s; steps: {', '.join(s.name for s in self.selected)}", flush=True)
        for i, step in enumerate(self.selected):
            later = self.selected[i + 1:]
            if step.name == "pack":
                timeout, why = step.budget_s, ""  # always: it is what brings the logs back
            elif step.needs_gpu and self.no_gpu:
                timeout, why = None, "no CUDA device (see env): nothing to run it on"
            else:
                timeout, why = plan_timeout(step, time.monotonic(), self.deadline, later)
            if timeout is None:
                res = Result(step.name, "skipped", budget_s=step.budget_s, note=why)
            else:
                t0 = time.monotonic()
                try:
                    res = getattr(self, f"step_{step.name}")(step, timeout)
                except Exception as e:  # noqa: BLE001 - a broken step must not stop the others
                    res = Result(step.name, "failed", note=f"suite error: {type(e).__name__}: {e}")
                res.seconds = res.seconds or (time.monotonic() - t0)
                res.budget_s = timeout
            self.results.append(res)
            print(f"[suite] {res.name}: {res.status} ({res.seconds:.0f} s) {res.note}"[:400], flush=True)
            if res.status in ("failed", "timeout") and res.log:
                print(f"[suite] --- last lines of {res.name}.log ---", flush=True)
                print("\n".join("    " + ln for ln in tail(Path(res.log), 30 if res.status == "timeout" else 15)))
            self.write_status()
            if step.name != "pack":
                self.pack()
        self.stop_background()
        (self.out / "summary.md").touch()  # listed among the files by the summary itself
        summary = self.summary()
        (self.out / "summary.md").write_text(summary + "\n")
        self.write_status()
        self.pack(final=True)
        print(summary, flush=True)
        bad = [r for r in self.results if r.status in ("failed", "timeout") and not self._optional(r.name)]
        return 1 if bad else 0

    def _optional(self, name: str) -> bool:
        return next(s.optional for s in STEPS if s.name == name)

    def command(self, step: Step, cmd: Sequence[str], timeout: float, env: Optional[Dict[str, str]] = None) -> Result:
        status, rc, secs = run_command(cmd, self.log(step.name), timeout, env or self.env)
        note = "" if status == "ok" else (f"hung or too slow: killed after {timeout:.0f} s, stacks in its log"
                                          if status == "timeout" else f"exit code {rc}")
        return Result(step.name, status, secs, note=note, command=_shell(cmd), log=str(self.log(step.name)))

    def would_run(self, step: Step, cmd: Sequence[str]) -> Result:
        return Result(step.name, "dry", note=f"would run: {_shell(cmd)}", command=_shell(cmd))

    # -- steps -------------------------------------------------------------------------------------
    def step_env(self, step: Step, timeout: float) -> Result:
        path = self.work / "env.json"
        res = self.command(step, [self.py, str(Path(__file__).resolve()), "--probe", str(path)], timeout)
        try:
            self.env_info = json.loads(path.read_text())
        except (OSError, ValueError):
            return res
        self.env["SPECCAS_COMMIT"] = str(self.env_info.get("commit", ""))
        gpu = self.env_info.get("gpu")
        if not self.dry and not gpu:
            self.no_gpu = True
            res.status, res.note = "failed", "no CUDA device visible to torch: GPU steps skipped (--dry-run on a CPU)"
        else:
            res.note = (f"{gpu or 'no GPU (dry run)'}; torch {self.env_info.get('torch')}, triton "
                        f"{self.env_info.get('triton')}; GPU {self.env_info.get('idle')}")
        return res

    def step_wheels(self, step: Step, timeout: float) -> Result:
        wheels = sorted(WHEELS.glob("*.whl"))
        if not wheels:
            return Result(step.name, "skipped", note="no .whl/*.whl carried (FlashInfer rows will say unavailable)")
        site = self.work / "site"
        cmd = [self.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--upgrade", "--target", str(site)] + [str(w) for w in wheels]
        res = self.command(step, cmd, timeout)
        if res.status == "ok":
            self.env["PYTHONPATH"] = os.pathsep.join([self.env["PYTHONPATH"], str(site)])
            res.note = f"{len(wheels)} wheels: " + ", ".join(" ".join(w.name.split("-")[:2]) for w in wheels)
            if any(w.name.startswith("flashinfer") for w in wheels) and not self.dry:
                self.start_background("flashinfer_jit", [self.py, "-c", FLASHINFER_PREWARM])
                res.note += "; FlashInfer's sampling module compiling in the background"
        return res

    # -- background work (compiles that overlap the steps) ----------------------------------------------
    def start_background(self, name: str, cmd: Sequence[str]) -> None:
        log = self.log(name)
        with open(log, "ab") as f:
            f.write(f"$ {_shell(cmd)}\n".encode())
            proc = subprocess.Popen(list(cmd), cwd=REPO_ROOT, env=dict(self.env), stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.background[name] = (proc, log, time.monotonic())

    def wait_background(self, name: str, timeout: float) -> str:
        """Wait up to ``timeout`` s for a background job; a note on how it ended ('' if none)."""
        if name not in self.background:
            return ""
        proc, _, t0 = self.background[name]
        try:
            rc = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            return f"{name} still running after {time.monotonic() - t0:.0f} s"
        return f"{name} {'done' if rc == 0 else f'failed (exit code {rc}, see its log)'}"

    def stop_background(self) -> None:
        for name, (proc, log, t0) in self.background.items():
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
                with open(log, "a") as f:
                    f.write(f"\n=== gpu_suite: stopped at the end of the suite after "
                            f"{time.monotonic() - t0:.0f} s ===\n")

    def step_build(self, step: Step, timeout: float) -> Result:
        cmd = [self.py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-v", "-e", "."]
        if self.dry:
            return self.would_run(step, ["MAX_JOBS=16", "TORCH_CUDA_ARCH_LIST=9.0"] + cmd)
        res = self.command(step, cmd, timeout)
        left = timeout - res.seconds
        if res.status == "failed" and left > 30:
            fallback = [self.py, "setup.py", "build_ext", "--inplace"]
            res2 = self.command(step, fallback, left)
            res2.seconds += res.seconds
            res2.note = f"pip install failed ({res.note}); build_ext --inplace: {res2.status}"
            res = res2
        res.note = "; ".join(x for x in (res.note, self.backends_note()) if x)
        return res

    def backends_note(self) -> str:
        """Which GPU backends import after the build (the answer goes into the build's log too)."""
        probe = ("import speccas_kernels as sk\nfor b in ('triton', 'cuda'):\n    ok, why = sk.backend_available(b)\n"
                 "    print(f'{b}: ' + ('available' if ok else f'unavailable ({why})'))")
        try:
            r = subprocess.run([self.py, "-c", probe], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True,
                               timeout=90)
            text = (r.stdout + r.stderr).strip()
        except subprocess.TimeoutExpired:
            text = "the backend probe took over 90 s"
        with open(self.log("build"), "a") as f:
            f.write(f"\n$ python -c <backend probe>\n{text}\n")
        lines = text.splitlines()
        return ", ".join(ln for ln in lines if ln.startswith(("triton:", "cuda:"))) or (lines[-1] if lines else "")

    def _pytest(self, step: Step, selection: Sequence[str], timeout: float, parallel: bool, verbose: bool) -> Result:
        junit = self.work / f"junit_{step.name}.xml"
        cmd = [self.py, "-m", "pytest", *selection, "-m", "cuda or not cuda", "-p", "no:cacheprovider",
               "-o", f"faulthandler_timeout={int(min(60, max(timeout - 10, 5)))}", f"--junitxml={junit}",
               "-rfE", "--durations=15", "-v" if verbose else "-q"]
        if _has_module("pytest_timeout"):
            cmd += [f"--timeout={int(min(90, max(timeout - 10, 5)))}", "--timeout-method=thread"]
        if parallel and not self.dry and _has_module("xdist"):
            cmd += ["-n", "8", "--dist", "loadgroup"]  # (the modules that share files on one worker)
        if self.dry and step.name == "proofs":
            return self.would_run(step, cmd)
        res = self.command(step, cmd, timeout)
        summary = junit_summary(junit)
        text = "\n".join(tail(self.log(step.name), 10**6))
        if "error" in summary:  # cut short (no junit): what its verbose log says had finished
            seen = log_summary(text)
            if sum(seen[k] for k in ("passed", "failed", "errors", "skipped")):
                summary["error"] += (f"; the log shows {seen['passed']} passed, {seen['failed']} failed, "
                                     f"{seen['errors']} errors, {seen['skipped']} skipped before the end"
                                     + ("; first failing: " + ", ".join(seen["failed_ids"][:3])
                                        if seen["failed_ids"] else ""))
        hung = text.count("Timeout +++") // 2  # pytest-timeout frames each dump with two such lines
        suspects = hang_suspects(text)
        for backend in suspects:
            self.hung.setdefault(backend, step.name)
        res.note = "; ".join(x for x in (res.note, junit_note(summary),
                                          f"{hung} tests hit the per-test timeout" if hung else "",
                                          f"HANG: the stacks point at {', '.join(suspects)}" if suspects else "") if x)
        if res.status == "failed" and summary.get("tests") and summary.get("failures") == 0 \
                and summary.get("errors") == 0:
            res.status = "ok"  # e.g. pytest's "no tests ran" exit code with a clean junit
        return res

    def step_proofs(self, step: Step, timeout: float) -> Result:
        return self._pytest(step, ["tests/test_gpu.py"], timeout, parallel=False, verbose=True)

    def step_tests(self, step: Step, timeout: float) -> Result:
        if self.dry:  # one quick test through the same flags: proves the junit and timeout plumbing
            return self._pytest(step, ["tests/test_bench.py::test_memory_cap_skips"], timeout, parallel=True,
                                verbose=False)
        # (verbose: a line per test, so a step cut short by its timeout, which writes no junit XML, still says
        # what finished: ``log_summary``)
        return self._pytest(step, ["tests", "--ignore=tests/test_gpu.py"], timeout, parallel=True, verbose=True)

    def _providers(self, wanted: Sequence[str], timeout: float) -> tuple:
        """(providers to run, notes on those left out). A backend whose hang a test step reported
        would only hang again; FlashInfer is left out while its background compile is unfinished or
        failed (its first call would compile it all over again)."""
        keep, notes = [], []
        for p in wanted:
            if p in self.hung:
                notes.append(f"{p} left out (hung in {self.hung[p]})")
            elif p == "flashinfer" and "flashinfer_jit" in self.background:
                ended = self.wait_background("flashinfer_jit", min(30.0, timeout / 4))
                if ended != "flashinfer_jit done":
                    notes.append(f"flashinfer left out ({ended})")
                else:
                    keep.append(p)
            else:
                keep.append(p)
        return keep, notes

    def _bench(self, step: Step, script: str, providers: Sequence[str], extra: Sequence[str], timeout: float,
               gpu_only: bool = False) -> Result:
        t0 = time.monotonic()
        keep, notes = self._providers(providers, timeout)
        if not keep:
            return Result(step.name, "skipped", note="; ".join(notes))
        timeout -= time.monotonic() - t0
        cmd = [self.py, f"bench/{script}", "--out", str(self.out), "--no-progress", "--providers", ",".join(keep),
               "--deadline-s", f"{max(timeout - min(25, max(10, timeout / 4)), 5):.0f}", *extra]
        if self.dry:
            if gpu_only:
                res = self.would_run(step, cmd)
                res.note = "; ".join([res.note] + notes)
                return res
            cmd += ["--dry", "--device", "cpu", "--interleave", "--rotate", "2"]
        res = self.command(step, cmd, timeout)
        log = tail(self.log(step.name), 400)
        wrote = [ln.split("] ", 1)[1] for ln in log if "] wrote " in ln]
        left = [ln.split("] ", 1)[-1] for ln in log if "points not run" in ln]
        res.note = "; ".join(x for x in [res.note] + notes + wrote + left if x)
        return res

    def step_bench_verify(self, step: Step, timeout: float) -> Result:
        provs = ["reference", "cpp"] if self.dry else ["triton", "cuda", "reference", "hf", "flashinfer"]
        return self._bench(step, "bench_verify.py", provs, ["--preset", "suite"], timeout)

    def step_bench_sample(self, step: Step, timeout: float) -> Result:
        provs = (["reference", "cpp", "multinomial", "argmax"] if self.dry
                 else ["triton", "cuda", "reference", "multinomial", "argmax", "flashinfer"])
        return self._bench(step, "bench_sample.py", provs, ["--preset", "suite"], timeout)

    def step_compile_verify(self, step: Step, timeout: float) -> Result:
        grid = ["--rules", "speculative,token_v3", "--B", "1,64", "--K", "4", "--V", "151936", "--dtypes", "fp32,bf16",
                "--compile-budget", f"{max(timeout - 40, 10):.0f}", "--compile-timeout", "45"]
        return self._bench(step, "bench_verify.py", ["triton", "torch.compile"], grid, timeout, gpu_only=True)

    def step_compile_sample(self, step: Step, timeout: float) -> Result:
        grid = ["--B", "1,64", "--V", "151936", "--dtypes", "fp32,bf16",
                "--compile-budget", f"{max(timeout - 15, 5):.0f}", "--compile-timeout", "20"]
        return self._bench(step, "bench_sample.py", ["triton", "torch.compile"], grid, timeout, gpu_only=True)

    def step_grid_verify(self, step: Step, timeout: float) -> Result:
        return self._bench(step, "bench_verify.py", ["triton", "cuda"], [], timeout, gpu_only=True)

    def step_model(self, step: Step, timeout: float) -> Result:
        model = Path(self.args.model)
        if not model.exists():
            return Result(step.name, "skipped", note=f"{model} is absent (bench/roofline.py writes it): no model table")
        cmd = [self.py, "bench/report.py", "--results", str(self.out), "--model", str(model),
               "--model-table", str(self.out / "model_vs_measured.md")] + (["--include-cpu"] if self.dry else [])
        res = self.command(step, cmd, timeout)
        table = self.out / "model_vs_measured.md"
        if res.status == "ok" and table.exists():
            done = [ln for ln in table.read_text().splitlines() if "comparisons; measured / model" in ln]
            res.note = "; ".join(done) or "no measured point matches a model point"
        return res

    def step_report(self, step: Step, timeout: float) -> Result:
        cmd = [self.py, "bench/report.py", "--results", str(self.out), "--out", str(self.work / "REPORT.md"),
               "--no-plots", "--model", str(self.args.model)]
        return self.command(step, cmd, timeout)

    def step_pack(self, step: Step, timeout: float) -> Result:
        self.pack()
        names = {p.name for p in self.out.iterdir()} | {"summary.md"}
        extra = sorted(names - self.expected_files())
        warn = f"; over the {MAX_OUT_FILES} files that come back from $OUT" if len(names) > MAX_OUT_FILES else ""
        return Result(step.name, "ok", note=f"{len(names)} files in {self.out}{warn}"
                      + (f" (not the suite's: {', '.join(extra)})" if extra else ""))

    # -- outputs -----------------------------------------------------------------------------------
    def expected_files(self) -> set:
        return {"summary.md", "status.json", "logs.tar.gz", "model_vs_measured.md"} | {
            p.name for p in self.out.glob("*.csv")}

    def write_status(self) -> None:
        data = {"dry_run": self.dry, "deadline_s": self.args.deadline_s,
                "elapsed_s": round(time.monotonic() - self.start, 1), "env": self.env_info,
                "steps": [dataclasses.asdict(r) | {"log": Path(r.log).name if r.log else ""} for r in self.results]}
        (self.out / "status.json").write_text(json.dumps(data, indent=1))

    def pack(self, final: bool = False) -> None:
        tmp = self.out / "logs.tar.gz.part"
        with tarfile.open(tmp, "w:gz") as tar:
            for p in sorted(self.work.iterdir()):
                if p.name != "site":
                    tar.add(p, arcname=f"logs/{p.name}")
        tmp.replace(self.out / "logs.tar.gz")
        if final and not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)

    def summary(self) -> str:
        e = self.env_info
        elapsed = time.monotonic() - self.start
        head = (f"speccas GPU suite{' (DRY RUN on CPU)' if self.dry else ''}: {e.get('gpu') or 'no GPU'}; "
                f"driver/smi: {e.get('nvidia_smi') or '-'}; torch {e.get('torch')} (CUDA {e.get('torch_cuda')}), "
                f"triton {e.get('triton')}, {e.get('nvcc') or 'no nvcc'}; commit {e.get('commit')}, "
                f"sources {e.get('source_digest')}; GPU {e.get('idle')}; "
                f"{elapsed:.0f} s of the {self.args.deadline_s:.0f} s deadline")
        lines = ["## " + head, "", "| step | status | s | budget s | note |", "|:--|:--|--:|--:|:--|"]
        for r in self.results:
            note = r.note.replace("|", "/").replace("\n", " ")
            lines.append(f"| {r.name} | {r.status.upper() if r.status in ('failed', 'timeout') else r.status} | "
                         f"{r.seconds:.0f} | {r.budget_s:.0f} | {note[:300]} |")
        skipped = [r.name for r in self.results if r.status == "skipped" and r.note.startswith("deadline")]
        if skipped:
            lines += ["", f"Skipped at the deadline: {', '.join(skipped)}."]
        lines += [""] + headline(self.out)
        lines += ["", "Files: " + ", ".join(sorted(p.name for p in self.out.iterdir() if p.is_file()))
                  + " (copy the CSVs into bench/results/)."]
        return "\n".join(lines)


def headline(out: Path) -> List[str]:
    """A short table of this run's measured rows: per rule, the speccas kernels' median (and share of
    the measured copy bandwidth) at the large and the small batch of the suite's key shape."""
    import csv

    rows = []
    for f in sorted(out.glob("verify_*.csv")) + sorted(out.glob("sample_*.csv")):
        with f.open(newline="") as fh:
            rows += [r for r in csv.DictReader(fh) if r.get("median_us")]
    if not rows:
        return ["No benchmark rows measured."]
    copy = sorted({round(float(r["copy_gbps"])) for r in rows if r.get("copy_gbps")})
    lines = [f"Measured copy bandwidth: {', '.join(str(c) for c in copy)} GB/s (read + write)."]
    for op in ("verify", "sample"):
        sel = [r for r in rows if r["op"] == op]
        if not sel:
            continue
        Ks = [r["K"] for r in sel]
        K = "4" if "4" in Ks else max(set(Ks), key=Ks.count)
        V = max({r["V"] for r in sel}, key=int)
        Bs = sorted({int(r["B"]) for r in sel if r["K"] == K and r["V"] == V})
        shapes = sorted({b for b in (64 if 64 in Bs else Bs[-1], Bs[0])}, reverse=True)
        cols = [(B, d, p) for B in shapes for d in ("fp32", "bf16", "fp16")
                for p in ("triton", "cuda", "cpp", "reference")
                if any(r["B"] == str(B) and r["dtype"] == d and r["provider"] == p and r["K"] == K and r["V"] == V
                       for r in sel)]
        if not cols:
            continue
        lines += ["", f"{op}, K = {K or '-'}, V = {V}: median µs (% of copy bandwidth)", "",
                  "| rule | " + " | ".join(f"{p} {d} B={B}" for B, d, p in cols) + " |",
                  "|:--|" + "--:|" * len(cols)]
        for rule in dict.fromkeys(r["rule"] for r in sel):
            cells = []
            for B, d, p in cols:
                r = next((r for r in reversed(sel) if r["rule"] == rule and r["B"] == str(B) and r["dtype"] == d
                          and r["provider"] == p and r["K"] == K and r["V"] == V), None)
                cells.append(f"{float(r['median_us']):.3g} ({100 * float(r['gbps']) / float(r['copy_gbps']):.0f}%)"
                             if r and r.get("gbps") and r.get("copy_gbps") else "")
            if any(cells):
                lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return lines


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def parse_steps(text: str) -> List[str]:
    names = [s for s in text.replace(" ", "").split(",") if s]
    bad = [s for s in names if s not in STEP_NAMES]
    if bad:
        raise SystemExit(f"--steps: unknown {', '.join(bad)}; expected some of {', '.join(STEP_NAMES)}")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="The one command for a lent GPU (see the module docstring).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=None, help=f"output folder (default: $OUT when set, else {LOCAL_OUT})")
    p.add_argument("--dry-run", action="store_true", help="on the CPU: GPU steps say what they would run")
    p.add_argument("--deadline-s", type=float, default=DEADLINE_S,
                   help="seconds for the whole suite; steps that would run past it are cut or skipped")
    p.add_argument("--steps", type=parse_steps, default=list(STEP_NAMES), help="comma-separated subset, in order")
    p.add_argument("--model", default=str(MODEL_CSV), help="the static model's CSV (bench/roofline.py)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary log folder")
    p.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)  # the env step's child
    p.add_argument("--digest", action="store_true", help="print the source digest of this tree and exit")
    args = p.parse_args(argv)
    if args.probe:
        return probe_env(args.probe)
    if args.digest:
        print(source_digest())
        return 0
    return Suite(args).run()


if __name__ == "__main__":
    sys.exit(main())
