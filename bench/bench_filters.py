"""The sampling filters (top-k, top-p, min-p) in ``sample`` and ``verify`` against sort-based filtering.

Three providers per point, timed interleaved in one run (``common.measure_interleaved``: the order rotates,
so load changes hit all three alike):

* ``<backend>``: the speccas call with the filter (``sample(..., top_k=...)``, ``verify(..., top_k=...)``):
  the kernels find one cut-off per position without sorting the vocabulary (SPEC.md section 2);
* ``sort+<backend>``: what engines do without such kernels: ``torch.sort`` of the scaled logits, ``softmax``
  and ``cumsum`` for top-p, a scatter back, the dropped entries set to ``-inf`` (``engine_filter`` below; ties
  at the cut-off are not kept, as in engines), then the same speccas call unfiltered on those logits (at
  ``verify``, both the drafter's and the target's logits are filtered);
* ``<backend> no filter``: the unfiltered call on the original logits: the floor.

Ops are recorded as ``sample_filtered`` / ``verify_filtered`` and the ``rule`` column names the filter
(``verify`` runs rule ``speculative``), so the rows sit apart from ``bench_sample.py`` / ``bench_verify.py``
in the report. The ``note`` column holds the load average during the point: on a shared machine every time
is high, the ratios (interleaved) are the figures to read.

    python bench/bench_filters.py                      # cpp, B in {1, 8}, V = 151936, K = 4
    python bench/bench_filters.py --backend reference --B 1 --V 32000 --quick

Triton runs on the CPU only under its interpreter: never time it there (``--backend triton`` needs CUDA).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import speccas_kernels as sk  # noqa: E402
from bench import common  # noqa: E402

FILTERS = {
    "top_k=50": dict(top_k=50),
    "top_p=0.9": dict(top_p=0.9),
    "min_p=0.05": dict(min_p=0.05),
    "top_k=50,top_p=0.9,min_p=0.05": dict(top_k=50, top_p=0.9, min_p=0.05),
}
TEMPERATURE = 0.7


def engine_filter(z: torch.Tensor, T: float, top_k=None, top_p=None, min_p=None) -> torch.Tensor:
    """Sort-based filtering of logits ``[..., V]`` at temperature ``T`` (top-k, then top-p on the renormalized
    result, then min-p), the way serving engines do it: returns the scaled logits with the dropped entries
    at ``-inf`` (to be sampled at ``T = 1``)."""
    s = z.float() / T
    srt, idx = torch.sort(s, dim=-1, descending=True)
    V = s.shape[-1]
    drop = torch.zeros_like(srt, dtype=torch.bool)
    if top_k:
        drop |= torch.arange(V, device=s.device) >= top_k
    if top_p is not None and top_p < 1:
        probs = torch.softmax(srt.masked_fill(drop, float("-inf")), -1)
        drop |= (probs.cumsum(-1) - probs) >= top_p
    if min_p:
        probs = torch.softmax(srt.masked_fill(drop, float("-inf")), -1)
        drop |= probs < min_p * probs[..., :1]
    return torch.empty_like(s).scatter_(-1, idx, srt.masked_fill(drop, float("-inf")))


def make_calls(op: str, B: int, K: int, V: int, filt: dict, backend: str, seed: int = 0):
    """{provider: [callable]} at one point."""
    g = torch.Generator().manual_seed(seed + B + V + K)
    if op == "sample":
        z = torch.randn(B, V, generator=g).mul_(2.5)
        kw = dict(seed=seed, offset=0, backend=backend)
        return {
            backend: [lambda: sk.sample(z, temperature=TEMPERATURE, **filt, **kw)],
            f"sort+{backend}": [lambda: sk.sample(engine_filter(z, TEMPERATURE, **filt), temperature=1.0, **kw)],
            f"{backend} no filter": [lambda: sk.sample(z, temperature=TEMPERATURE, **kw)],
        }
    base = torch.randn(B, K + 1, V, generator=g).mul_(2.5)
    zp = base + torch.randn(B, K + 1, V, generator=g)
    zq = base[:, :K] + torch.randn(B, K, V, generator=g)
    x = sk.sample(zq.reshape(B * K, V), temperature=TEMPERATURE, **filt, seed=seed, offset=0).view(B, K)
    kw = dict(rule="speculative", seed=seed, offset=0, backend=backend)
    return {
        backend: [lambda: sk.verify(zq, zp, x, temperature=TEMPERATURE, **filt, **kw)],
        f"sort+{backend}": [lambda: sk.verify(engine_filter(zq, TEMPERATURE, **filt), engine_filter(zp, TEMPERATURE, **filt),
                                              x, temperature=1.0, **kw)],
        f"{backend} no filter": [lambda: sk.verify(zq, zp, x, temperature=TEMPERATURE, **kw)],
    }


def nbytes(op: str, B: int, K: int, V: int) -> int:
    return B * V * 4 if op == "sample" else B * (2 * K + 1) * V * 4 + B * K * 8


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpp", choices=("cpp", "reference", "cuda", "triton"))
    ap.add_argument("--ops", type=common.csv_list(), default=["sample", "verify"])
    ap.add_argument("--B", type=common.csv_list(int), default=[1, 8])
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--V", type=common.csv_list(int), default=[151936])
    ap.add_argument("--filters", type=common.csv_list(), default=None, help=f"names from {list(FILTERS)}")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved samples per provider")
    ap.add_argument("--quick", action="store_true", help="5 samples per provider")
    ap.add_argument("--out", default=None, help="CSV to append to (default bench/results/filters_<device>.csv)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.backend in ("cuda", "triton") else "cpu")
    if device.type == "cpu" and args.backend == "triton":
        raise SystemExit("--backend triton: the interpreter is not a kernel to time")
    ok, why = sk.backend_available(args.backend)
    if not ok:
        raise SystemExit(f"--backend {args.backend}: {why}")
    filters = args.filters or list(FILTERS)
    common.check_choices("filters", filters, FILTERS)
    common.check_choices("ops", args.ops, ("sample", "verify"))
    sink = common.CsvSink(Path(args.out) if args.out else common.results_path(common.RESULTS_DIR, "filters", device))
    commit, date, dev_name = common.git_commit(), common.iso_date(), common.device_name(device)
    copy = common.copy_bandwidth_gbps(device, small=args.quick)
    print(f"{dev_name}, {torch.get_num_threads()} threads, commit {commit}, load {os.getloadavg()}")
    print(f"| op | filter | B | V | {args.backend} | sort+{args.backend} | {args.backend} no filter | "
          f"sort / speccas | speccas / no filter |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for op in args.ops:
        for V in args.V:
            for B in args.B:
                for name in filters:
                    calls = make_calls(op, B, args.K, V, FILTERS[name], args.backend)
                    load0 = os.getloadavg()[0]
                    t, errors = common.measure_interleaved(calls, device, graph={}, rounds=5 if args.quick else args.rounds,
                                                           budget_s=2.0 if args.quick else 6.0)
                    load = max(load0, os.getloadavg()[0])
                    K = args.K if op == "verify" else 0
                    for prov, tm in t.items():
                        sink.write(dict(op=f"{op}_filtered", provider=prov, rule=name, B=B, K=K, V=V, dtype="fp32",
                                        median_us=tm.median_us, p20_us=tm.p20_us, p80_us=tm.p80_us,
                                        gbps=common.gbps(nbytes(op, B, args.K, V), tm.median_us), copy_gbps=copy,
                                        device=dev_name, commit=commit, date=date,
                                        note=f"T={TEMPERATURE}; {torch.get_num_threads()} threads; load {load:.2f} "
                                             f"(2 cores: shared machine); {tm.mode}"))
                    for prov, e in errors.items():
                        print(f"  {prov}: {e}")
                    b, s, u = (t.get(p) for p in (args.backend, f"sort+{args.backend}", f"{args.backend} no filter"))
                    if b and s and u:
                        print(f"| {op} | {name} | {B} | {V} | {b.median_us / 1e3:.2f} ms | {s.median_us / 1e3:.2f} ms | "
                              f"{u.median_us / 1e3:.2f} ms | {s.median_us / b.median_us:.2f}x | "
                              f"{b.median_us / u.median_us:.2f}x |", flush=True)
    print(f"rows appended to {sink.path}; load at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
