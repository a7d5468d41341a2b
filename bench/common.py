"""Shared benchmark machinery: timing, provenance, memory limits, CSV rows and the grid runner.

Timing
    * CUDA, ``events``: ``triton.testing.do_bench`` (CUDA events, L2 flushed before every call),
      median and 20th/80th percentiles.
    * CUDA, ``graph``: one call captured in a CUDA graph, replayed in batches between CUDA events
      (launch overhead removed, L2 *not* flushed: inputs under the L2 size may be served from it).
    * CUDA, ``auto`` (default): ``graph`` for inputs up to ``GRAPH_MAX_BYTES``, ``events`` above;
      a provider whose call cannot be captured (host syncs) falls back to ``events``.
    * CPU: wall clock (``time.perf_counter``) over repeats after warmup; median and percentiles.

Effective bandwidth is bytes the op must read (the logits in their dtype plus the draft tokens)
divided by the median time; ``copy_gbps`` is the same device's measured copy bandwidth
(bytes read + written by one large ``copy_``), the practical ceiling to compare against.

Every row carries the device name, the git commit (``-dirty`` when tracked or untracked files
outside ``bench/results`` differ from it) and an ISO date.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import functools
import platform
import re
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

COLUMNS = ["op", "provider", "rule", "B", "K", "V", "dtype", "median_us", "p20_us", "p80_us", "gbps",
           "copy_gbps", "device", "commit", "date", "note"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

GRAPH_MAX_BYTES = 32 << 20  # auto timing: CUDA graphs for inputs up to 32 MiB (launch-bound sizes)
CPU_MAX_ELEMS = 1 << 25  # CPU default cap on B * (K + 1) * V (the reference materializes it many times)
MEMORY_FRACTION = 0.6  # use at most this share of the free memory for one grid point


# ----------------------------------------------------------------------------------------------
# Provenance


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    return dev


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@functools.cache
def device_name(device: torch.device) -> str:
    """A human-readable device name, e.g. ``NVIDIA H100 80GB HBM3`` or ``AMD EPYC (2 threads)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"{_cpu_model()} ({n} thread{'' if n == 1 else 's'})"


def slug(text: str) -> str:
    """File-name-safe lowercase form: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    s = re.sub(r"\(.*?\)", "", text).lower()
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "device"


def device_slug(device: torch.device) -> str:
    name = slug(device_name(device))
    return name if device.type == "cuda" else (name if name.startswith("cpu") else f"cpu-{name}")


@functools.cache
def git_commit() -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when the tree differs (bench/results excluded)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        st = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)bench/results"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        st = ""
    return head + ("-dirty" if st.strip() else "")


def iso_date() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass
class Timing:
    median_us: float
    p20_us: float
    p80_us: float
    mode: str  # "wall", "do_bench", "cuda-graph"


def _quantile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _summarize(samples_s: Sequence[float], mode: str) -> Timing:
    us = [s * 1e6 for s in samples_s]
    return Timing(statistics.median(us), _quantile(us, 0.2), _quantile(us, 0.8), mode)


def time_cpu(fn: Callable, *, warmup: int = 1, reps: int = 20, budget_s: float = 3.0,
             est_s: Optional[float] = None) -> Timing:
    """Wall-clock samples of ``fn()`` after ``warmup`` calls. Each sample runs ``fn`` enough times to
    last about a millisecond (one call when it is slower); stops after ``reps`` samples or
    ``budget_s`` seconds, whichever comes first, with at least 3 samples. ``est_s``: a known
    duration of one call (then ``warmup`` may be 0)."""
    durations = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - t0)
    if durations:
        est_s = min(durations + ([est_s] if est_s else []))
    est = max(est_s or 1e-3, 1e-7)
    inner = max(1, min(1000, int(1e-3 / est)))
    if est < 0.01:
        reps = max(reps, 25)  # cheap calls: more samples, for a median that survives preemption
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < reps:
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t) / inner)
        if len(samples) >= 3 and time.perf_counter() - start > budget_s:
            break
    return _summarize(samples, "wall")


def time_cuda_events(fn: Callable, *, warmup_ms: int = 25, rep_ms: int = 100) -> Timing:
    """``triton.testing.do_bench``: CUDA events around each call, L2 flushed in between."""
    import triton.testing

    med, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(med * 1e3, p20 * 1e3, p80 * 1e3, "do_bench")


def time_cuda_graph(fn: Callable, *, samples: int = 20, sample_ms: float = 1.0) -> Timing:
    """One call of ``fn`` captured in a CUDA graph; ``samples`` batches of replays (each about
    ``sample_ms`` long) timed with CUDA events; per-call time = batch time / replays."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    est_ms = max(start.elapsed_time(end) / 10, 1e-4)
    n = max(1, min(2000, int(sample_ms / est_ms)))
    out = []
    for _ in range(samples):
        start.record()
        for _ in range(n):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / n * 1e-3)
    del graph
    return _summarize(out, "cuda-graph")


def time_fn(fn: Callable, device: torch.device, *, mode: str, nbytes: int, graph_ok: bool, quick: bool,
            dry: bool = False, first_call_s: Optional[float] = None) -> Timing:
    """Time ``fn`` on ``device``. ``mode``: ``auto``, ``events`` or ``graph`` (CUDA only).
    On CPU, a call already made (taking ``first_call_s``) counts as the warmup when it was slow
    (over 0.5 s): one more slow call would add nothing but minutes. Faster calls get two warmup
    calls, and the faster of them sets how many calls one sample averages (about 1 ms worth)."""
    if device.type != "cuda":
        warm = 0 if (first_call_s is not None and first_call_s > 0.5) else 2
        if dry:
            return time_cpu(fn, warmup=1, reps=3, budget_s=0.2)
        return time_cpu(fn, warmup=warm, reps=7 if quick else 20, budget_s=1.0 if quick else 4.0,
                        est_s=first_call_s)
    use_graph = graph_ok and (mode == "graph" or (mode == "auto" and nbytes <= GRAPH_MAX_BYTES))
    if use_graph:
        try:
            return time_cuda_graph(fn, samples=10 if quick else 20)
        except Exception as e:  # not capturable (host sync, CPU work): fall back, and say so
            torch.cuda.synchronize()
            t = time_cuda_events(fn, rep_ms=50 if quick else 100)
            t.mode = f"do_bench (graph capture failed: {type(e).__name__})"
            return t
    return time_cuda_events(fn, rep_ms=50 if quick else 100)


class CallTimeout(Exception):
    pass


def call_with_timeout(fn: Callable, seconds: Optional[float]):
    """``fn()``, interrupted with ``CallTimeout`` after ``seconds`` (SIGALRM; main thread on POSIX
    only, elsewhere no limit). Used for torch.compile's first calls: whatever exception the
    interrupted compiler wraps the alarm in, the caller sees ``CallTimeout``."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return fn()
    fired = []

    def _alarm(signum, frame):
        fired.append(True)
        raise CallTimeout(f"took longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    except BaseException as e:
        if fired and not isinstance(e, CallTimeout):
            raise CallTimeout(f"took longer than {seconds:g} s") from e
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------------------------
# Bandwidth and memory


@functools.cache
def copy_bandwidth_gbps(device: torch.device, small: bool = False) -> float:
    """Measured copy bandwidth in GB/s (1e9 bytes/s): (bytes read + bytes written) / median time of
    ``dst.copy_(src)`` on a large float32 tensor (1 GiB on CUDA, 256 MiB on CPU; 16 MiB when
    ``small``, for smoke tests: then caches inflate it)."""
    nbytes = (16 << 20) if small else (1 << 30) if device.type == "cuda" else (256 << 20)
    free = free_memory_bytes(device)
    while nbytes > (16 << 20) and 2 * nbytes > free * MEMORY_FRACTION:
        nbytes //= 2
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    if device.type == "cuda":
        t = time_cuda_events(lambda: dst.copy_(src), rep_ms=200)
    else:
        t = time_cpu(lambda: dst.copy_(src), warmup=2, reps=9, budget_s=3.0)
    del src, dst
    return 2 * nbytes / (t.median_us * 1e-6) / 1e9


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def gbps(nbytes: int, median_us: float) -> float:
    return nbytes / (median_us * 1e-6) / 1e9 if median_us > 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# CSV


def results_path(out_dir: Path, op: str, device: torch.device) -> Path:
    return Path(out_dir) / f"{op}_{device_slug(device)}.csv"


class CsvSink:
    """Appends rows to a CSV file, writing the header when the file is new or empty."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = 0

    def write(self, row: Dict) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="raise")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})
        self.rows += 1


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.6g}"
    return "" if v is None else str(v)


# ----------------------------------------------------------------------------------------------
# Providers and the grid runner


class Unavailable(Exception):
    """A provider cannot run a grid point (or at all); the message says why."""


@dataclasses.dataclass
class Provider:
    """One implementation to time.

    ``check()`` -> (ok, reason) decides once per run; ``build(ctx)`` returns the zero-argument
    callable to time for a grid point (raising ``Unavailable`` for points it does not cover);
    ``first_call_timeout`` bounds the first (compiling) call; ``graph_ok`` says whether its call
    may be captured in a CUDA graph."""

    name: str
    check: Callable[[], Tuple[bool, str]]
    build: Callable[[object], Callable]
    graph_ok: bool = True
    first_call_timeout: Optional[float] = None
    note: str = ""
    cuda_only: bool = False
    cpu_only: bool = False
    disabled: Optional[str] = None  # set when a first call timed out: skip the rest of the run


@dataclasses.dataclass(frozen=True)
class Point:
    rule: str
    B: int
    K: int
    V: int
    dtype: str


def csv_list(kind=str):
    def parse(s: str):
        return [kind(x) for x in s.replace(" ", "").split(",") if x]
    return parse


def base_parser(op: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small CPU-friendly grid, few repeats")
    p.add_argument("--dry", "--tiny", dest="dry", action="store_true",
                   help="tiny shapes and 3 repeats, for smoke tests (seconds); torch.compile skipped unless named")
    p.add_argument("--providers", type=csv_list(), default=None,
                   help="comma-separated providers (default: every one available here)")
    p.add_argument("--dtypes", type=csv_list(), default=None, help=f"comma-separated, from {', '.join(DTYPES)}")
    p.add_argument("--B", dest="B", type=csv_list(int), default=None, help="batch sizes (override the grid)")
    p.add_argument("--V", dest="V", type=csv_list(int), default=None, help="vocabulary sizes (override the grid)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory of the CSV files")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--timing", choices=("auto", "events", "graph"), default="auto",
                   help="CUDA timing: auto = CUDA graphs up to 32 MiB of input, do_bench events above")
    p.add_argument("--max-elems", type=int, default=None,
                   help=f"skip points with B*(K+1)*V above this (default on CPU: {CPU_MAX_ELEMS}; on CUDA: memory only)")
    p.add_argument("--compile-timeout", type=float, default=None,
                   help="seconds allowed for a torch.compile first call (default 240 on CPU, 600 on CUDA)")
    p.add_argument("--compile-budget", type=float, default=None,
                   help="seconds of torch.compile first calls allowed over the whole run (default: 300 with "
                        "--quick on CPU, 1200 on CPU, unlimited on CUDA)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the CPU run (recorded in the device name); default: torch's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def resolve_grid(args, grid: Dict, quick: Dict, dry: Dict, keys: Iterable[str]) -> Dict:
    """``grid`` updated in place by ``quick`` (``--quick``), then ``dry`` (``--dry``), then by every
    option in ``keys`` the command line set; returned for convenience."""
    if args.quick:
        grid.update(quick)
    if args.dry:
        grid.update(dry)
    for key in keys:
        if getattr(args, key) is not None:
            grid[key] = getattr(args, key)
    return grid


def check_choices(option: str, values: Iterable[str], allowed: Iterable[str]) -> None:
    """``SystemExit`` naming ``--option`` when some of ``values`` are not in ``allowed``."""
    bad = [v for v in values if v not in allowed]
    if bad:
        raise SystemExit(f"--{option}: unknown {bad}; expected some of {', '.join(allowed)}")


def start_run(op: str, args, device: torch.device,
              all_providers: Callable[[torch.device, float], Sequence["Provider"]]) -> Tuple[List["Provider"], "CsvSink"]:
    """The shared start of a benchmark run: device-dependent defaults (``finish_args``), the
    providers to run (torch.compile skipped in ``--dry`` mode unless named), the results file,
    and the announcement (skipped providers get their rows). Returns (providers, sink)."""
    finish_args(args, device)
    timeout = args.compile_timeout
    providers, skipped = select_providers(all_providers(device, timeout), args.providers, device, args.dry,
                                          default_skip=("torch.compile",))
    if args.dry and not args.providers:
        skipped.append(("torch.compile", "not run in --dry mode (compiles take minutes on CPU); name it to run it"))
    sink = CsvSink(results_path(args.out, op, device))
    base = {"op": op, "device": device_name(device), "commit": git_commit(),
            "date": iso_date()}
    announce(op, device, providers, skipped, sink, base)
    return providers, sink


def backend_provider(name: str, method: str) -> "Provider":
    """A speccas backend (``reference``, ``triton``, ``cuda``, ``cpp``) on normalized arguments:
    ``backends.resolve(name, ctx.device).<method>(ctx.args)`` (``method``: ``verify_args``, ...)."""
    import speccas_kernels
    from speccas_kernels import backends

    def build(ctx):
        mod = backends.resolve(name, ctx.device)
        return lambda: getattr(mod, method)(ctx.args)

    return Provider(
        name, lambda: speccas_kernels.backend_available(name), build,
        cuda_only=name in ("triton", "cuda"), cpu_only=name == "cpp",
        note="eager PyTorch" if name == "reference" else "",
    )


def compiled_provider(device: torch.device, timeout: float, fn: Callable) -> "Provider":
    """``torch.compile(fn, dynamic=True)`` (compiled on first use) called on ``ctx.args``; a first
    call slower than ``timeout`` seconds disables it."""
    state = {}

    def check():
        if not hasattr(torch, "compile"):
            return False, "this torch has no torch.compile"
        return True, ""

    def build(ctx):
        if "fn" not in state:
            compile_defaults(device)
            state["fn"] = torch.compile(fn, dynamic=True)
        compiled = state["fn"]
        return lambda: compiled(ctx.args)

    return Provider("torch.compile", check, build, first_call_timeout=timeout,
                    note="torch.compile(reference, dynamic=True)")


def require_sampling(ctx, rule: Optional[str] = None) -> None:
    """``Unavailable`` unless the context's point has ``rule`` (when given; else ``"rule"``) and its
    temperature is positive (else ``"greedy"``): for peers that cover only some points."""
    if rule is not None and ctx.point.rule != rule:
        raise Unavailable("rule")
    if ctx.temperature <= 0:
        raise Unavailable("greedy")


def finish_args(args, device: torch.device) -> None:
    """Device-dependent defaults of the shared options (call before anything reads device_name)."""
    if args.threads:
        torch.set_num_threads(args.threads)
        device_name.cache_clear()
    if args.compile_timeout is None:
        args.compile_timeout = 600.0 if device.type == "cuda" else 240.0
    if args.compile_budget is None and device.type != "cuda":
        args.compile_budget = 300.0 if (args.quick or args.dry) else 1200.0


def select_providers(all_providers: Sequence[Provider], requested: Optional[Sequence[str]],
                     device: torch.device, dry: bool, default_skip: Iterable[str] = ()) -> Tuple[List[Provider], List[Tuple[str, str]]]:
    """(providers to run, [(name, why not)] for the others). Unknown names are an error."""
    by_name = {p.name: p for p in all_providers}
    if requested:
        unknown = [n for n in requested if n not in by_name]
        if unknown:
            raise SystemExit(f"--providers: unknown {', '.join(unknown)}; expected some of {', '.join(by_name)}")
        names = list(requested)
    else:
        names = [p.name for p in all_providers if not (dry and p.name in default_skip)]
    run, skipped = [], []
    for n in names:
        p = by_name[n]
        if p.cuda_only and device.type != "cuda":
            skipped.append((n, "needs a CUDA device"))
            continue
        if p.cpu_only and device.type != "cpu":
            skipped.append((n, "CPU only"))
            continue
        ok, reason = p.check()
        if ok:
            run.append(p)
        else:
            skipped.append((n, reason))
    return run, skipped


def announce(op: str, device: torch.device, providers: Sequence[Provider], skipped, sink: CsvSink, base: Dict) -> None:
    print(f"[bench {op}] device: {device_name(device)}; commit {git_commit()}; results -> {sink.path}")
    if device.type != "cuda":
        print(f"[bench {op}] no CUDA device: running the CPU providers only "
              f"(triton, cuda and GPU peers need a GPU). CPU timings are wall clock; "
              f"on a shared machine they are noisy.")
    print(f"[bench {op}] providers: {', '.join(p.name for p in providers) or '(none)'}")
    for name, why in skipped:
        print(f"[bench {op}] provider {name} unavailable: {why}")
        sink.write({**base, "provider": name, "note": f"unavailable: {why}"})


def run_grid(op: str, points: Sequence[Point], providers: Sequence[Provider], *, device: torch.device,
             setup: Callable[[Point], object], nbytes: Callable[[Point], int], peak_bytes: Callable[[Point], int],
             sink: CsvSink, args, describe: Callable[[object, object], str] = lambda ctx, out: "",
             has_k: bool = True) -> Dict[str, int]:
    """Time every provider at every grid point; write one row per (point, provider).

    ``describe(ctx, output)`` turns a provider's first output into a note for the point's rows
    (e.g. the mean accepted drafts); it is asked until it returns something. Providers with a
    ``first_call_timeout`` (torch.compile) also share ``args.compile_budget`` seconds of first
    calls over the run; past it they are disabled, and the rows say so."""
    from tqdm import tqdm

    copy_bw = copy_bandwidth_gbps(device, small=args.dry)
    print(f"[bench {op}] measured copy bandwidth: {copy_bw:.1f} GB/s (read + write)")
    max_elems = args.max_elems if args.max_elems is not None else (CPU_MAX_ELEMS if device.type == "cpu" else None)
    common = {"op": op, "device": device_name(device), "commit": git_commit(), "date": iso_date(),
              "copy_gbps": copy_bw}
    counts = {"rows": 0, "skipped_points": 0, "errors": 0}
    budget = {"left": getattr(args, "compile_budget", None)}
    bar = tqdm(points, desc=f"{op}", unit="pt", disable=args.no_progress, dynamic_ncols=True)
    for pt in bar:
        bar.set_postfix_str(f"{pt.rule} B={pt.B}" + (f" K={pt.K}" if has_k else "") + f" V={pt.V} {pt.dtype}")
        elems = pt.B * (pt.K + 1) * pt.V
        need = peak_bytes(pt)
        free = free_memory_bytes(device)
        why = None
        if max_elems is not None and elems > max_elems:
            why = f"B*(K+1)*V = {elems} > cap {max_elems} (--max-elems)"
        elif need > free * MEMORY_FRACTION:
            why = f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
        if why:
            shape = f"{pt.rule} B={pt.B}" + (f" K={pt.K}" if has_k else "") + f" V={pt.V} {pt.dtype}"
            tqdm.write(f"[bench {op}] skip {shape}: {why}")
            counts["skipped_points"] += 1
            continue
        ctx = setup(pt)
        extra = ""
        row_base = {**common, "rule": pt.rule, "B": pt.B, "K": pt.K if has_k else "", "V": pt.V,
                    "dtype": pt.dtype}
        nb = nbytes(pt)
        for prov in providers:
            if prov.disabled:
                continue
            try:
                fn = prov.build(ctx)
            except Unavailable:
                continue  # a point this provider does not cover (e.g. a peer without the rule)
            note = [prov.note] if prov.note else []
            timeout = prov.first_call_timeout
            by_budget = False
            if timeout and budget["left"] is not None and budget["left"] < timeout:
                timeout, by_budget = max(budget["left"], 1.0), True
            try:
                t_first = time.perf_counter()
                out = call_with_timeout(fn, timeout)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                first_s = time.perf_counter() - t_first
                if prov.first_call_timeout:
                    if budget["left"] is not None:
                        budget["left"] -= first_s
                    if first_s > 1.0:
                        note.append(f"first call {first_s:.0f} s")
                if not extra:
                    extra = describe(ctx, out)
                del out
                t = time_fn(fn, device, mode=args.timing, nbytes=nb, graph_ok=prov.graph_ok, quick=args.quick,
                            dry=args.dry, first_call_s=first_s)
            except CallTimeout as e:
                prov.disabled = (f"compile budget of {args.compile_budget:g} s spent (--compile-budget)" if by_budget
                                 else f"first call {e} (--compile-timeout)")
                if budget["left"] is not None:
                    budget["left"] -= timeout
                tqdm.write(f"[bench {op}] {prov.name} disabled for the rest of the run: {prov.disabled}")
                sink.write({**row_base, "provider": prov.name, "note": f"unavailable: {prov.disabled}"})
                counts["errors"] += 1
                continue
            except Exception as e:  # one failing provider must not end the run
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
                tqdm.write(f"[bench {op}] {prov.name} failed at {pt.rule} B={pt.B} V={pt.V} {pt.dtype}: {msg}")
                sink.write({**row_base, "provider": prov.name, "note": f"error: {msg}"})
                counts["errors"] += 1
                if device.type == "cuda":
                    try:
                        torch.cuda.synchronize()
                    except Exception:  # a sticky CUDA error: nothing after this point can be trusted
                        tqdm.write(f"[bench {op}] the CUDA context is broken; stopping")
                        raise
                continue
            note.append(f"timing={t.mode}")
            if extra:
                note.append(extra)
            sink.write({**row_base, "provider": prov.name, "median_us": t.median_us, "p20_us": t.p20_us,
                        "p80_us": t.p80_us, "gbps": gbps(nb, t.median_us), "note": "; ".join(note)})
            counts["rows"] += 1
        del ctx
        if device.type == "cuda":
            torch.cuda.empty_cache()
    bar.close()
    print(f"[bench {op}] wrote {counts['rows']} rows to {sink.path}; skipped {counts['skipped_points']} points; "
          f"{counts['errors']} provider failures")
    return counts


def compile_defaults(device: torch.device) -> None:
    """torch.compile settings for benchmarking: enough recompiles for every rule and dtype, and an
    in-process compile on CPU (a timed-out compile then leaves no worker burning cores)."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    try:
        import torch._inductor.config as ic

        if device.type == "cpu":
            ic.compile_threads = 1
    except Exception:
        pass

