"""Microbenchmark of ``verify`` (one verification round) across providers, shapes, dtypes and rules.

Providers (each runs where it can; the run prints which ones it skipped and why):

* ``reference``: ``speccas_kernels.reference.verify_args``, eager PyTorch (the executable spec);
* ``torch.compile``: the same function through ``torch.compile(dynamic=True)`` (inductor: Triton
  on CUDA, C++/OpenMP on CPU); a first call slower than ``--compile-timeout`` disables it;
* ``triton``, ``cuda``, ``cpp``: the speccas backends, when ``speccas_kernels.backend_available``
  says so (triton and cuda on CUDA tensors, cpp on CPU tensors);
* ``hf``: Hugging Face transformers' ``_speculative_sampling`` (assisted generation, algorithm 1 of
  Leviathan et al.): both softmaxes, accept/reject and the residual draw. It handles one sequence
  at a time, so a batch is one call per row. Rule ``speculative`` only;
* ``flashinfer``: ``flashinfer.sampling.chain_speculative_sampling`` after the two softmaxes
  (FlashInfer takes probabilities). CUDA only, rule ``speculative`` only.

All speccas providers are timed on normalized arguments (``checks.check_verify`` runs once,
outside the timed region). Inputs: correlated drafter/target logits (shared base + independent
noise) and drafts sampled from the drafter, so acceptance is realistic; the mean accepted count
goes into the ``note`` column.

    python bench/bench_verify.py --quick                # CPU-friendly grid
    python bench/bench_verify.py                        # full grid on this device
    python bench/bench_verify.py --providers reference,cpp --rules speculative --B 8 --V 151936
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import speccas_kernels  # noqa: E402
from bench import common  # noqa: E402
from speccas_kernels import checks, reference  # noqa: E402

OP = "verify"
GRID_B = [1, 8, 64, 256]
GRID_K = [1, 4, 8]
GRID_V = [32000, 128256, 151936]
CPU_RULES = list(speccas_kernels.RULES)  # every rule of the table
QUICK = dict(B=[1, 8], K=[4], V=[32000, 151936], dtypes=["fp32"])
DRY = dict(B=[1, 3], K=[2], V=[1000], dtypes=["fp32"], rules=["speculative", "token_v3"])
PEAK_FACTOR = 24  # float32 [B, K + 1, V] temporaries the eager reference holds at its peak (estimate)


class Ctx(NamedTuple):
    point: common.Point
    device: torch.device
    args: checks.VerifyArgs  # normalized, for the peers and torch.compile
    temperature: float
    kwargs: dict  # the public call's arguments: tensors plus Python-number scalars


def make_inputs(pt: common.Point, device: torch.device, seed: int, temperature: float, agreement: float = 2.0,
                input_set: int = 0) -> Ctx:
    """Inputs of one grid point; ``input_set`` > 0 draws another set of the same shape (rotation)."""
    g = torch.Generator(device=device).manual_seed(seed + 7919 * pt.B + 104729 * pt.K + pt.V + 1000003 * input_set)
    B, K, V = pt.B, pt.K, pt.V
    base = torch.randn(B, K + 1, V, generator=g, device=device).mul_(2.5)
    zp = base + torch.randn(B, K + 1, V, generator=g, device=device).mul_(2.5 / agreement)
    zq = base[:, :K] + torch.randn(B, K, V, generator=g, device=device).mul_(2.5 / agreement)
    del base
    probs = torch.softmax(zq.reshape(B * K, V) / max(temperature, 1e-3), -1)
    x = torch.multinomial(probs, 1, generator=g).view(B, K)
    del probs
    dt = common.DTYPES[pt.dtype]
    kwargs = dict(draft_logits=zq.to(dt), target_logits=zp.to(dt), draft_tokens=x, rule=pt.rule, temperature=temperature,
                  seed=seed, offset=0)
    args = checks.check_verify(**kwargs, alpha=None, num_draft_tokens=None, vocab_size=None, validate=False)
    return Ctx(pt, device, args, temperature, kwargs)


def nbytes(pt: common.Point) -> int:
    """Bytes a verify round must read: both logit tensors in their dtype, plus the int64 drafts."""
    es = common.element_size(common.DTYPES[pt.dtype])
    return pt.B * pt.K * pt.V * es + pt.B * (pt.K + 1) * pt.V * es + pt.B * pt.K * 8


def peak_bytes(pt: common.Point) -> int:
    return nbytes(pt) + PEAK_FACTOR * pt.B * (pt.K + 1) * pt.V * 4


def describe(ctx: Ctx, out) -> str:
    """The mean accepted drafts of a speccas provider's first output (all compute the same law)."""
    if not isinstance(out, reference.VerifyOutput):
        return ""
    return f"mean_accepted={out.num_accepted.double().mean().item():.2f}/{ctx.point.K}"


# ----------------------------------------------------------------------------------------------
# Providers


def backend_provider(name: str) -> common.Provider:
    return common.backend_provider(name, "verify")


def compiled_provider(device: torch.device, timeout: float) -> common.Provider:
    return common.compiled_provider(device, timeout, reference.verify_args)


def _hf_function():
    from transformers.generation import utils as hf_utils

    fn = getattr(hf_utils, "_speculative_sampling", None)
    if fn is None:
        raise ImportError("transformers.generation.utils has no _speculative_sampling")
    params = list(inspect.signature(fn).parameters)
    expected = ["candidate_input_ids", "candidate_logits", "candidate_length", "new_logits"]
    if params[:4] != expected:
        raise ImportError(f"_speculative_sampling signature changed: {params}")
    return fn


def hf_provider() -> common.Provider:
    def check():
        try:
            _hf_function()
        except Exception as e:  # not installed, or an incompatible version
            return False, f"transformers: {e}"
        import transformers

        hf_provider_obj.note = f"transformers {transformers.__version__} _speculative_sampling (a batch-1 API: one call per row)"
        return True, ""

    def build(ctx: Ctx):
        common.require_sampling(ctx, "speculative")
        fn = _hf_function()
        a = ctx.args
        B, K = a.draft_tokens.shape
        T = ctx.temperature
        zq, zp, x = a.draft_logits, a.target_logits, a.draft_tokens

        def run():
            # What assisted generation does per round: float32 logits (its temperature warper
            # divides by T), then _speculative_sampling on one sequence.
            out = []
            for b in range(B):
                q = zq[b:b + 1].float()
                p = zp[b:b + 1].float()
                if T != 1.0:
                    q, p = q / T, p / T
                out.append(fn(x[b:b + 1], q, K, p))
            return out

        return run

    hf_provider_obj = common.Provider("hf", check, build, graph_ok=False)
    return hf_provider_obj


def flashinfer_provider() -> common.Provider:
    state = {}

    def check():
        try:
            import flashinfer
            from flashinfer.sampling import chain_speculative_sampling
        except Exception as e:
            return False, f"import flashinfer failed: {type(e).__name__}: {e}"
        state["fn"] = chain_speculative_sampling
        state["params"] = set(inspect.signature(chain_speculative_sampling).parameters)
        prov.note = f"flashinfer {getattr(flashinfer, '__version__', '?')} chain_speculative_sampling after softmax"
        return True, ""

    def build(ctx: Ctx):
        common.require_sampling(ctx, "speculative")
        fn, params = state["fn"], state["params"]
        a = ctx.args
        B, K = a.draft_tokens.shape
        ids = a.draft_tokens.to(torch.int32)
        T = ctx.temperature
        zq, zp = a.draft_logits, a.target_logits

        def run():
            dp = torch.softmax(zq.float() / T, -1)
            tp = torch.softmax(zp.float() / T, -1)
            kw = dict(draft_probs=dp, draft_token_ids=ids, target_probs=tp)
            if "uniform_samples" in params:  # FlashInfer <= 0.1.x took the uniforms as an input
                kw["uniform_samples"] = torch.rand(B, K + 1, device=dp.device)
            return fn(**kw)

        return run

    # its first call compiles the sampling module (JIT) unless bench/gpu_suite.py built it already
    prov = common.Provider("flashinfer", check, build, cuda_only=True,
                           first_call_timeout=common.FLASHINFER_FIRST_CALL_S)
    return prov


def all_providers(device: torch.device, compile_timeout: float):
    return [backend_provider("reference"), compiled_provider(device, compile_timeout), backend_provider("triton"),
            backend_provider("cuda"), backend_provider("cpp"), hf_provider(), flashinfer_provider()]


def main(argv=None) -> int:
    p = common.base_parser(OP, "Benchmark speccas_kernels.verify against the reference and peers.")
    p.add_argument("--rules", type=common.csv_list(), default=None,
                   help="comma-separated (default: every rule of the table)")
    p.add_argument("--K", dest="K", type=common.csv_list(int), default=None, help="draft lengths (override the grid)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--preset", choices=("grid", "suite"), default="grid",
                   help="grid: the full product of the options; suite: its key points first (suite_points)")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    grid = dict(B=GRID_B, K=GRID_K, V=GRID_V, dtypes=["fp32", "bf16"],
                rules=list(speccas_kernels.RULES) if device.type == "cuda" else CPU_RULES)
    common.resolve_grid(args, grid, QUICK, DRY, ("B", "K", "V", "dtypes", "rules"))
    common.check_choices("rules", grid["rules"], speccas_kernels.RULES)
    common.check_choices("dtypes", grid["dtypes"], common.DTYPES)
    providers, sink = common.start_run(OP, args, device, all_providers)
    if args.preset == "suite":
        points = suite_points(grid)
    else:
        points = [common.Point(r, B, K, V, d) for d in grid["dtypes"] for r in grid["rules"] for K in grid["K"]
                  for V in grid["V"] for B in grid["B"]]
    common.run_grid(OP, points, providers, device=device,
                    setup=lambda pt, i: make_inputs(pt, device, args.seed, args.temperature, input_set=i),
                    nbytes=nbytes, peak_bytes=peak_bytes, sink=sink, args=args, describe=describe)
    return 0


def suite_points(grid) -> list:
    """The grid's points in the order a time-limited run (``bench/gpu_suite.py``) wants them, a
    subset of the full product. First the shapes the static model's claims are about, at K = 4
    (when in the grid) and the largest V: every rule and dtype at the large batch (64 when in the
    grid), then every rule at the smallest batch in the first dtype, then in the others; then every
    B x K for ``speculative`` and ``token_v3`` in the first dtype; then the other vocabulary sizes
    for ``speculative``. (Each new rule, dtype or size-1 dimension may cost a Triton compile.)"""
    Bs, Ks, Vs = sorted(grid["B"]), list(grid["K"]), sorted(grid["V"])
    b_hi, b_lo = (64 if 64 in Bs else Bs[-1]), Bs[0]
    k_mid, v_hi, d0 = (4 if 4 in Ks else Ks[0]), Vs[-1], grid["dtypes"][0]
    focus = [r for r in ("speculative", "token_v3") if r in grid["rules"]]
    pts = [common.Point(r, b_hi, k_mid, v_hi, d) for d in grid["dtypes"] for r in grid["rules"]]
    pts += [common.Point(r, b_lo, k_mid, v_hi, d) for d in grid["dtypes"] for r in grid["rules"]]
    pts += [common.Point(r, B, K, v_hi, d0) for r in focus for K in Ks for B in Bs]
    pts += [common.Point(r, B, k_mid, V, d0) for r in focus[:1] for V in Vs for B in (b_hi, b_lo)]
    return list(dict.fromkeys(pts))


if __name__ == "__main__":
    sys.exit(main())
