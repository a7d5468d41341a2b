"""Microbenchmark of ``sample`` (one drafter step: a token per row from ``softmax(logits / T)``).

The ``rule`` column holds the mode: ``sample`` (T = 1) or ``greedy`` (T = 0).

Providers:

* ``reference``, ``torch.compile``, ``triton``, ``cuda``, ``cpp``: as in ``bench_verify.py``
  (``sample_args`` on normalized arguments);
* ``multinomial``: ``torch.multinomial(torch.softmax(logits.float() / T, -1), 1)``, the common
  PyTorch way (``sample`` mode);
* ``argmax``: ``torch.argmax(logits, -1)`` (``greedy`` mode): the floor for a greedy step;
* ``flashinfer``: ``flashinfer.sampling.sampling_from_logits`` when FlashInfer imports (CUDA).

    python bench/bench_sample.py --quick
    python bench/bench_sample.py --modes sample --providers reference,cpp,multinomial --B 8 --V 151936
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import common  # noqa: E402
from speccas_kernels import checks, reference  # noqa: E402

OP = "sample"
MODES = {"sample": 1.0, "greedy": 0.0}
GRID_B = [1, 8, 64, 256]
GRID_V = [32000, 128256, 151936]
QUICK = dict(B=[1, 8], V=[32000, 151936], dtypes=["fp32"])
DRY = dict(B=[1, 3], V=[1000], dtypes=["fp32"])
PEAK_FACTOR = 12  # float32 [B, V] temporaries of the eager reference (Philox in int64), estimate


class Ctx(NamedTuple):
    point: common.Point
    device: torch.device
    args: checks.SampleArgs  # normalized, for torch.compile
    temperature: float
    kwargs: dict  # the public call's arguments: the logits plus Python-number scalars


def make_inputs(pt: common.Point, device: torch.device, seed: int, input_set: int = 0) -> Ctx:
    """Inputs of one grid point; ``input_set`` > 0 draws another set of the same shape (rotation)."""
    g = torch.Generator(device=device).manual_seed(seed + 7919 * pt.B + pt.V + 1000003 * input_set)
    z = torch.randn(pt.B, pt.V, generator=g, device=device).mul_(2.5).to(common.DTYPES[pt.dtype])
    T = MODES[pt.rule]
    kwargs = dict(logits=z, temperature=T, seed=seed, offset=0)
    args = checks.check_sample(**kwargs, vocab_size=None, validate=False)
    return Ctx(pt, device, args, T, kwargs)


def nbytes(pt: common.Point) -> int:
    return pt.B * pt.V * common.element_size(common.DTYPES[pt.dtype])


def peak_bytes(pt: common.Point) -> int:
    return nbytes(pt) + PEAK_FACTOR * pt.B * pt.V * 8


def backend_provider(name: str) -> common.Provider:
    return common.backend_provider(name, "sample")


def compiled_provider(device: torch.device, timeout: float) -> common.Provider:
    return common.compiled_provider(device, timeout, reference.sample_args)


def multinomial_provider() -> common.Provider:
    def build(ctx: Ctx):
        if ctx.temperature <= 0:
            raise common.Unavailable("greedy")
        z, T = ctx.args.logits, ctx.temperature
        if T == 1.0:
            return lambda: torch.multinomial(torch.softmax(z.float(), -1), 1)
        return lambda: torch.multinomial(torch.softmax(z.float() / T, -1), 1)

    return common.Provider("multinomial", lambda: (True, ""), build, note="torch.multinomial(softmax(logits))")


def argmax_provider() -> common.Provider:
    def build(ctx: Ctx):
        if ctx.temperature > 0:
            raise common.Unavailable("sampling")
        z = ctx.args.logits
        return lambda: torch.argmax(z, -1)

    return common.Provider("argmax", lambda: (True, ""), build, note="torch.argmax(logits)")


def flashinfer_provider() -> common.Provider:
    state = {}

    def check():
        try:
            import flashinfer
            from flashinfer import sampling
        except Exception as e:
            return False, f"import flashinfer failed: {type(e).__name__}: {e}"
        fn = getattr(sampling, "sampling_from_logits", None)
        if fn is None:
            return False, f"flashinfer {getattr(flashinfer, '__version__', '?')} has no sampling_from_logits"
        state["fn"] = fn
        state["params"] = set(inspect.signature(fn).parameters)
        prov.note = f"flashinfer {getattr(flashinfer, '__version__', '?')} sampling_from_logits"
        return True, ""

    def build(ctx: Ctx):
        if ctx.temperature <= 0:
            raise common.Unavailable("greedy")
        fn = state["fn"]
        z, T = ctx.args.logits, ctx.temperature
        return (lambda: fn(z)) if T == 1.0 else (lambda: fn(z / T))

    # its first call compiles the sampling module (JIT) unless bench/gpu_suite.py built it already
    prov = common.Provider("flashinfer", check, build, cuda_only=True,
                           first_call_timeout=common.FLASHINFER_FIRST_CALL_S)
    return prov


def all_providers(device: torch.device, compile_timeout: float):
    return [backend_provider("reference"), compiled_provider(device, compile_timeout), backend_provider("triton"),
            backend_provider("cuda"), backend_provider("cpp"), multinomial_provider(), argmax_provider(),
            flashinfer_provider()]


def main(argv=None) -> int:
    p = common.base_parser(OP, "Benchmark speccas_kernels.sample against the reference and PyTorch samplers.")
    p.add_argument("--modes", "--rules", dest="modes", type=common.csv_list(), default=None,
                   help="comma-separated from sample (T = 1), greedy (T = 0); default both")
    p.add_argument("--preset", choices=("grid", "suite"), default="grid",
                   help="grid: the full product of the options; suite: its key points first (suite_points)")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    grid = dict(B=GRID_B, V=GRID_V, dtypes=["fp32", "bf16"], modes=list(MODES))
    common.resolve_grid(args, grid, QUICK, DRY, ("B", "V", "dtypes", "modes"))
    common.check_choices("modes", grid["modes"], MODES)
    common.check_choices("dtypes", grid["dtypes"], common.DTYPES)
    providers, sink = common.start_run(OP, args, device, all_providers)
    if args.preset == "suite":
        points = suite_points(grid)
    else:
        points = [common.Point(m, B, 0, V, d) for d in grid["dtypes"] for m in grid["modes"] for V in grid["V"]
                  for B in grid["B"]]
    common.run_grid(OP, points, providers, device=device,
                    setup=lambda pt, i: make_inputs(pt, device, args.seed, input_set=i),
                    nbytes=nbytes, peak_bytes=peak_bytes, sink=sink, args=args, has_k=False)
    return 0


def suite_points(grid) -> list:
    """The grid's points in the order a time-limited run (``bench/gpu_suite.py``) wants them: every
    mode and dtype at the large batch (64 when in the grid) and at the smallest, with the largest
    V; then every B x V in the first mode and dtype."""
    Bs, Vs = sorted(grid["B"]), sorted(grid["V"])
    b_hi, b_lo, v_hi = (64 if 64 in Bs else Bs[-1]), Bs[0], Vs[-1]
    pts = [common.Point(m, B, 0, v_hi, d) for B in (b_hi, b_lo) for d in grid["dtypes"] for m in grid["modes"]]
    pts += [common.Point(grid["modes"][0], B, 0, V, grid["dtypes"][0]) for V in reversed(Vs) for B in Bs]
    return list(dict.fromkeys(pts))


if __name__ == "__main__":
    sys.exit(main())
