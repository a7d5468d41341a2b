"""Shared benchmark machinery: timing, provenance, memory limits, CSV rows and the grid runner.

Timing
    * CUDA: every point builds several input sets (enough to cover three times the L2, so a set
      is evicted before it is read again; ``--rotate``) and times its providers together, round
      by round, each round starting at the next provider (``measure_interleaved``): a sample is
      a batch of calls cycling through the sets, between two CUDA events. ``--timing auto``
      (default) captures the calls in one CUDA graph for inputs up to ``GRAPH_MAX_BYTES``
      (decode-sized shapes: launch gaps removed) and calls eagerly above; ``graph`` / ``events``
      force one way. A provider that cannot be captured (host syncs) is called eagerly, and its
      row says so. Median and 20th/80th percentiles over the samples.
    * CPU: wall clock (``time.perf_counter``) over repeats after warmup, one provider after
      another; ``--interleave`` uses the CUDA scheme with the wall clock instead.

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
import inspect
import os
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
FLASHINFER_FIRST_CALL_S = 240.0  # FlashInfer's first call may JIT-compile its sampling module (nvcc)


# ----------------------------------------------------------------------------------------------
# Provenance


def interpreter_skip_repatching() -> None:
    """The Triton interpreter patches the language modules a nested @triton.jit function sees on every call (an
    inspect.getmembers over them each time: 40% of a verify call). Those patches are never undone, so one per
    module is enough: after this, later calls skip it. For the interpreter only (tests, the static model);
    nothing changes on a GPU. Idempotent."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    cls = getattr(interpreter, "InterpretedFunction", None)
    if cls is None or not hasattr(cls, "rewrite") or getattr(cls.__call__, "_speccas_skip_repatching", False):
        return
    patched = set()

    def call(self, *args, **kwargs):
        key = id(self.fn.__globals__)  # the language modules a function sees are its module's
        if key not in patched:
            interpreter._patch_lang(self.fn)
            patched.add(key)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    call._speccas_skip_repatching = True
    cls.__call__ = call
    _np_dtype_table(interpreter)
    _lazy_tuple_type_names(interpreter.tl.core)
    _lazy_tuple_types(interpreter.tl.core)
    _no_dead_overflow_checks(interpreter)


class _TupleType:
    """``tl.tuple``'s ``type`` when its constructor was given none: formed from the values when first read, then
    kept on the instance (an assignment, as ``_setitem``'s, goes to the instance too: no ``__set__``)."""

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        t = obj.__dict__["type"] = obj._speccas_type_for(obj.values)
        return t


def _lazy_tuple_types(core) -> None:
    """Every interpreted tensor keeps its shape as a ``tl.tuple``, whose constructor builds a tuple type of its
    values at once (some 10% of a verify call, for types that are almost never read): the type is formed when first
    read instead, from the same values by the same function."""
    cls, for_values = getattr(core, "tuple", None), getattr(core, "_type_for_tuple_values", None)
    if cls is None or for_values is None or getattr(cls, "_speccas_lazy_type", False):
        return
    orig = cls.__init__
    if list(inspect.signature(orig).parameters) != ["self", "args", "type"]:  # pragma: no cover (another Triton)
        return

    def __init__(self, args, type=None):
        if type is not None:
            orig(self, args, type)
        else:
            self.values = [i for i in args]

    cls.__init__ = __init__
    cls.type = _TupleType()
    cls._speccas_type_for = staticmethod(for_values)
    cls._speccas_lazy_type = True


def _no_dead_overflow_checks(interpreter) -> None:
    """The interpreter's options ask for integer overflow checks (``sanitize_overflow``) but not for asserts
    (``debug``): every int32 add, sub and mul then also runs in int64, against both bounds, into a ``device_assert``
    that the same options make a no-op (some 25% of a verify call, all of it discarded). The interpreter builds its
    options with their defaults, ``debug`` off: there the checks are now off too, the same numpy arithmetic and the
    same answers (a GPU compile leaves them out as well). Options given ``debug`` should be given the checks with it."""
    cls = getattr(interpreter, "InterpreterOptions", None)
    if cls is None or getattr(cls, "_speccas_no_dead_checks", False) or not dataclasses.is_dataclass(cls):
        return
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    if "sanitize_overflow" not in fields or fields.get("debug", True):  # pragma: no cover (another Triton)
        return

    @dataclasses.dataclass(frozen=True)
    class Options(cls):
        sanitize_overflow: bool = False

    Options._speccas_no_dead_checks = True
    Options.__name__ = Options.__qualname__ = cls.__name__
    interpreter.InterpreterOptions = Options  # what ``InterpreterBuilder()`` builds from here on
    builder = getattr(interpreter, "interpreter_builder", None)  # the one built at import
    opts = getattr(builder, "options", None)
    if isinstance(opts, cls) and not opts.debug:
        builder.options = Options(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(cls)
                                     if f.name != "sanitize_overflow"})


def _lazy_tuple_type_names(core) -> None:
    """Every interpreted tensor builds a tuple type for its shape, whose constructor formats its name string at once
    (some 12% of a verify call): the name is formed when read instead, from the same types and fields. Equality
    and mangling never read it."""
    cls = getattr(core, "tuple_type", None)
    if cls is None or getattr(cls, "_speccas_lazy_name", False) or "name" in vars(cls):
        return

    def __init__(self, types, fields=None):
        self.types = types
        self.fields = fields or [''] * len(types)

    def get_name(self):
        given = self.__dict__.get("_name")  # (a caller that sets the name keeps what it set)
        if given is not None:
            return given
        return '[' + ','.join([f"{k}:{v}" for k, v in zip(self.fields, self.types)]) + ']'

    def set_name(self, value):
        self.__dict__["_name"] = value

    cls.__init__ = __init__
    cls.name = property(get_name, set_name)
    cls._speccas_lazy_name = True


def _np_dtype_table(interpreter) -> None:
    """The interpreter maps a Triton dtype to its numpy dtype by a table it builds anew on every call (some 8% of a
    verify call): the same answers from one table, built once. A dtype the table lacks goes to the original."""
    orig = getattr(interpreter, "_get_np_dtype", None)
    if orig is None or getattr(orig, "_speccas_table", False):
        return
    tl = interpreter.tl
    names = ("int1", "float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
             "uint64", "bfloat16", "float8e5", "float8e5b16", "float8e4nv", "float8e4b8", "float8e4b15")
    table = {getattr(tl, n): orig(getattr(tl, n)) for n in names if hasattr(tl, n)}
    u64 = interpreter.np.dtype(interpreter.np.uint64)

    def get(tt_dtype):
        if isinstance(tt_dtype, tl.pointer_type):
            return u64
        if isinstance(tt_dtype, tl.block_type):
            tt_dtype = tt_dtype.element_ty
            if isinstance(tt_dtype, tl.pointer_type):
                return u64
        got = table.get(tt_dtype)
        return got if got is not None else orig(tt_dtype)

    get._speccas_table = True
    get._speccas_orig = orig
    interpreter._get_np_dtype = get


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
    """``$SPECCAS_COMMIT`` when set (a copy of the tree without ``.git``, e.g. on a lent GPU machine),
    else ``git rev-parse --short HEAD``, plus ``-dirty`` when the tree differs (bench/results excluded)."""
    env = os.environ.get("SPECCAS_COMMIT", "").strip()
    if env:
        return env
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
    mode: str  # "wall", "do_bench", "events", "cuda-graph" (plus the input sets, when rotated)


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


def time_cpu_fn(fn: Callable, *, quick: bool, dry: bool = False, first_call_s: Optional[float] = None) -> Timing:
    """Wall-clock timing of one CPU provider at one point (the CPU default: providers one after
    another). A call already made (taking ``first_call_s``) counts as the warmup when it was slow
    (over 0.5 s): one more slow call would add nothing but minutes. Faster calls get two warmup
    calls, and the faster of them sets how many calls one sample averages (about 1 ms worth)."""
    if dry:
        return time_cpu(fn, warmup=1, reps=3, budget_s=0.2)
    warm = 0 if (first_call_s is not None and first_call_s > 0.5) else 2
    return time_cpu(fn, warmup=warm, reps=7 if quick else 20, budget_s=1.0 if quick else 4.0, est_s=first_call_s)


class _Runner:
    """Runs one provider over its rotated input sets: ``run(reps)`` makes ``reps`` passes (one call
    per set each) and returns seconds per call. Modes: ``cuda-graph`` (one graph holding a call
    per set, replayed), ``events`` (eager calls between two CUDA events), ``wall`` (CPU clock)."""

    def __init__(self, fns: Sequence[Callable], device: torch.device, graph: bool):
        self.fns, self.device, self.graph = list(fns), device, None
        self.mode = "wall" if device.type != "cuda" else "events"
        if device.type == "cuda":
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            if graph:
                self._capture()

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for f in self.fns:  # each set once outside the graph (allocator and caches warm)
                f()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for f in self.fns:
                f()
        torch.cuda.synchronize()
        self.graph, self.mode = g, "cuda-graph"

    def run(self, reps: int) -> float:
        calls = reps * len(self.fns)
        if self.device.type != "cuda":
            t = time.perf_counter()
            for _ in range(reps):
                for f in self.fns:
                    f()
            return (time.perf_counter() - t) / calls
        self.start.record()
        for _ in range(reps):
            if self.graph is not None:
                self.graph.replay()
            else:
                for f in self.fns:
                    f()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) * 1e-3 / calls


def measure_interleaved(fns_by_provider: Dict[str, Sequence[Callable]], device: torch.device, *,
                        graph: Dict[str, bool], rounds: int = 15, sample_s: float = 1e-3,
                        budget_s: float = 3.0) -> Tuple[Dict[str, Timing], Dict[str, str]]:
    """Time several providers at one grid point, interleaved: round r times every provider once
    (one sample each, starting at provider r mod n, so drift in clocks or load spreads over all
    of them), and each provider cycles through its own list of input sets (``fns_by_provider[name]``,
    one callable per set), so that repeated calls read DRAM, not a cache the previous call filled.

    ``graph[name]``: capture that provider's calls in a CUDA graph (CUDA only; a provider that
    cannot be captured falls back to eager calls, and its mode says so). A sample lasts about
    ``sample_s``; a provider gets ``rounds`` samples, fewer (at least 3) when that would take it
    over ``budget_s``. Returns ({name: Timing}, {name: error message}) for providers that failed."""
    runners: Dict[str, _Runner] = {}
    errors: Dict[str, str] = {}
    fallback: Dict[str, str] = {}
    for name, fns in fns_by_provider.items():
        try:
            runners[name] = _Runner(fns, device, graph.get(name, False))
        except Exception as e:  # not capturable (a host sync, CPU work): eager calls, and say so
            if device.type == "cuda":
                torch.cuda.synchronize()
            fallback[name] = f" (graph capture failed: {type(e).__name__})"
            try:
                runners[name] = _Runner(fns, device, False)
            except Exception as e2:
                errors[name] = _error_text(e2)
    reps: Dict[str, int] = {}
    quota: Dict[str, int] = {}
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    for name, r in list(runners.items()):
        try:
            r.run(1)  # a warm-up pass over every set (a graph's first replay also uploads it)
            est = max(r.run(1), 1e-9)
        except Exception as e:
            errors[name] = _error_text(e)
            del runners[name]
            continue
        per_pass = est * len(r.fns)
        reps[name] = max(1, min(1000, int(sample_s / per_pass)))
        quota[name] = max(3, min(rounds, int(budget_s / (per_pass * reps[name]))))
    names = list(runners)
    for rnd in range(max(quota.values(), default=0)):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            if name in errors or len(samples[name]) >= quota[name]:
                continue
            try:
                samples[name].append(runners[name].run(reps[name]))
            except Exception as e:
                errors[name] = _error_text(e)
    timings = {}
    for name, r in runners.items():
        if name not in errors and samples[name]:
            t = _summarize(samples[name], r.mode + fallback.get(name, ""))
            t.mode += f", {len(r.fns)} input set{'s' if len(r.fns) > 1 else ''}"
            timings[name] = t
    del runners
    return timings, errors


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def rotation_sets(input_bytes: int, device: torch.device, requested: Optional[int] = None) -> int:
    """How many input sets a point rotates through: ``requested`` when given; on CUDA, enough sets
    to cover three times the L2 cache (so a set is evicted before it is read again), at most 256
    (inputs under about 0.7 MB then cover less than three L2s: decode-sized calls, where the
    launch, not the read, is the cost) and at most a fifth of the free memory; on CPU one."""
    if requested:
        return max(1, requested)
    if device.type != "cuda" or input_bytes <= 0:
        return 1
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20) or (50 << 20)
    n = -(-3 * l2 // input_bytes)
    cap = max(1, int(free_memory_bytes(device) * 0.2 // input_bytes))
    return int(max(1, min(n, 256, cap)))


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
    ``first_call_timeout`` bounds the first (compiling) call, and ``compile_budget`` makes those
    first calls share ``--compile-budget`` (torch.compile); ``graph_ok`` says whether its call
    may be captured in a CUDA graph."""

    name: str
    check: Callable[[], Tuple[bool, str]]
    build: Callable[[object], Callable]
    graph_ok: bool = True
    first_call_timeout: Optional[float] = None
    compile_budget: bool = False  # its first calls count against --compile-budget (torch.compile)
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
                   help="CUDA timing: auto = CUDA graphs up to 32 MiB of input, eager calls between events above")
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
    p.add_argument("--interleave", action="store_true",
                   help="on CPU too, time a point's providers together, round by round (always on CUDA)")
    p.add_argument("--rotate", type=int, default=None,
                   help="input sets a point rotates through (default: enough to cover 3x the L2 on CUDA, 1 on CPU)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="stop before the next grid point once this many seconds have passed (rows so far kept)")
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


def backend_provider(name: str, op: str) -> "Provider":
    """A speccas backend (``reference``, ``triton``, ``cuda``, ``cpp``) through the public call:
    ``speccas_kernels.<op>(**ctx.kwargs, backend=name)`` (``op``: ``verify`` or ``sample``), so the
    time includes the argument checks a user's call pays (Python numbers as scalars)."""
    import speccas_kernels

    fn = getattr(speccas_kernels, op)

    def build(ctx):
        kwargs = ctx.kwargs
        return lambda: fn(**kwargs, backend=name)

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

    return Provider("torch.compile", check, build, first_call_timeout=timeout, compile_budget=True,
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
             setup: Callable[[Point, int], object], nbytes: Callable[[Point], int], peak_bytes: Callable[[Point], int],
             sink: CsvSink, args, describe: Callable[[object, object], str] = lambda ctx, out: "",
             has_k: bool = True) -> Dict[str, int]:
    """Time every provider at every grid point; write one row per (point, provider).

    ``setup(point, i)`` builds the inputs of set ``i`` (sets differ in their random draws). On
    CUDA (and on CPU with ``--interleave``) a point gets ``rotation_sets`` input sets and its
    providers are timed together by ``measure_interleaved``: CUDA graphs for inputs up to
    ``GRAPH_MAX_BYTES`` (``--timing auto``), eager calls between CUDA events above. On CPU by
    default each provider is timed on its own with the wall clock.

    ``describe(ctx, output)`` turns a provider's first output into a note for the point's rows
    (e.g. the mean accepted drafts); it is asked until it returns something. Providers with a
    ``compile_budget`` (torch.compile) also share ``args.compile_budget`` seconds of first
    calls over the run; past it they are disabled, and the rows say so. ``args.deadline_s``
    (seconds from the start of the grid) stops the run before the next point once passed, and
    says how many points it left."""
    from tqdm import tqdm

    started = time.monotonic()
    deadline_s = getattr(args, "deadline_s", None)
    deadline = started + deadline_s if deadline_s else None
    copy_bw = copy_bandwidth_gbps(device, small=args.dry)
    print(f"[bench {op}] measured copy bandwidth: {copy_bw:.1f} GB/s (read + write)")
    interleave = device.type == "cuda" or bool(getattr(args, "interleave", False))
    rounds, budget_s = (3, 0.3) if args.dry else (10, 1.5) if args.quick else (15, 3.0)
    max_elems = args.max_elems if args.max_elems is not None else (CPU_MAX_ELEMS if device.type == "cpu" else None)
    common = {"op": op, "device": device_name(device), "commit": git_commit(), "date": iso_date(),
              "copy_gbps": copy_bw}
    counts = {"rows": 0, "skipped_points": 0, "errors": 0, "deadline_points": 0}
    budget = {"left": getattr(args, "compile_budget", None)}

    def failed(prov: Provider, row_base: Dict, pt: Point, e: BaseException) -> None:
        msg = _error_text(e)
        tqdm.write(f"[bench {op}] {prov.name} failed at {pt.rule} B={pt.B} V={pt.V} {pt.dtype}: {msg}")
        sink.write({**row_base, "provider": prov.name, "note": f"error: {msg}"})
        counts["errors"] += 1
        if device.type == "cuda":
            try:
                torch.cuda.synchronize()
            except Exception:  # a sticky CUDA error: nothing after this point can be trusted
                tqdm.write(f"[bench {op}] the CUDA context is broken; stopping")
                raise

    bar = tqdm(points, desc=f"{op}", unit="pt", disable=args.no_progress, dynamic_ncols=True)
    for index, pt in enumerate(bar):
        shape = f"{pt.rule} B={pt.B}" + (f" K={pt.K}" if has_k else "") + f" V={pt.V} {pt.dtype}"
        if deadline is not None and time.monotonic() > deadline:
            counts["deadline_points"] = len(points) - index
            tqdm.write(f"[bench {op}] deadline of {deadline_s:g} s passed: {len(points) - index} points not run "
                       f"(from {shape}; --deadline-s)")
            break
        bar.set_postfix_str(shape)
        nb = nbytes(pt)
        n_sets = rotation_sets(nb, device, getattr(args, "rotate", None)) if interleave else 1
        elems = pt.B * (pt.K + 1) * pt.V
        need = peak_bytes(pt) + (n_sets - 1) * nb
        free = free_memory_bytes(device)
        why = None
        if max_elems is not None and elems > max_elems:
            why = f"B*(K+1)*V = {elems} > cap {max_elems} (--max-elems)"
        elif need > free * MEMORY_FRACTION:
            why = f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
        if why:
            tqdm.write(f"[bench {op}] skip {shape}: {why}")
            counts["skipped_points"] += 1
            continue
        ctxs = [setup(pt, i) for i in range(n_sets)]
        extra = ""
        row_base = {**common, "rule": pt.rule, "B": pt.B, "K": pt.K if has_k else "", "V": pt.V,
                    "dtype": pt.dtype}
        ready: Dict[str, Tuple[Provider, List[Callable], List[str]]] = {}
        for prov in providers:
            if prov.disabled:
                continue
            try:
                fns = [prov.build(ctx) for ctx in ctxs]
            except Unavailable:
                continue  # a point this provider does not cover (e.g. a peer without the rule)
            note = [prov.note] if prov.note else []
            timeout = prov.first_call_timeout
            by_budget = False
            if timeout and prov.compile_budget and budget["left"] is not None and budget["left"] < timeout:
                timeout, by_budget = max(budget["left"], 1.0), True
            if timeout and deadline is not None:
                timeout = max(min(timeout, deadline - time.monotonic()), 1.0)
            try:
                t_first = time.perf_counter()
                out = call_with_timeout(fns[0], timeout)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                first_s = time.perf_counter() - t_first
                if prov.first_call_timeout:
                    if prov.compile_budget and budget["left"] is not None:
                        budget["left"] -= first_s
                    if first_s > 1.0:
                        note.append(f"first call {first_s:.0f} s")
                if not extra:
                    extra = describe(ctxs[0], out)
                del out
                if interleave:
                    ready[prov.name] = (prov, fns, note)
                    continue
                t = time_cpu_fn(fns[0], quick=args.quick, dry=args.dry, first_call_s=first_s)
            except CallTimeout as e:
                prov.disabled = (f"compile budget of {args.compile_budget:g} s spent (--compile-budget)" if by_budget
                                 else f"first call {e} (--compile-timeout or --deadline-s)")
                if prov.compile_budget and budget["left"] is not None:
                    budget["left"] -= timeout
                tqdm.write(f"[bench {op}] {prov.name} disabled for the rest of the run: {prov.disabled}")
                sink.write({**row_base, "provider": prov.name, "note": f"unavailable: {prov.disabled}"})
                counts["errors"] += 1
                continue
            except Exception as e:  # one failing provider must not end the run
                failed(prov, row_base, pt, e)
                continue
            write_row(sink, row_base, prov.name, t, nb, note, extra)
            counts["rows"] += 1
        if ready:
            use_graph = {name: device.type == "cuda" and prov.graph_ok and (
                args.timing == "graph" or (args.timing == "auto" and nb <= GRAPH_MAX_BYTES))
                for name, (prov, _, _) in ready.items()}
            timings, errors = measure_interleaved({name: fns for name, (_, fns, _) in ready.items()}, device,
                                                  graph=use_graph, rounds=rounds, budget_s=budget_s)
            for name, (prov, _, note) in ready.items():
                if name in errors:
                    failed(prov, row_base, pt, RuntimeError(errors[name]))
                    continue
                write_row(sink, row_base, name, timings[name], nb, note, extra)
                counts["rows"] += 1
        del ctxs, ready
        if device.type == "cuda":
            torch.cuda.empty_cache()
    bar.close()
    print(f"[bench {op}] wrote {counts['rows']} rows to {sink.path}; skipped {counts['skipped_points']} points; "
          f"{counts['errors']} provider failures" + (f"; {counts['deadline_points']} points left at the deadline"
                                                     if counts["deadline_points"] else ""))
    return counts


def write_row(sink: CsvSink, row_base: Dict, provider: str, t: Timing, nb: int, note: List[str], extra: str) -> None:
    note = note + [f"timing={t.mode}"] + ([extra] if extra else [])
    sink.write({**row_base, "provider": provider, "median_us": t.median_us, "p20_us": t.p20_us,
                "p80_us": t.p80_us, "gbps": gbps(nb, t.median_us), "note": "; ".join(note)})


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

