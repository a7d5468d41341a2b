"""What ``verify(..., return_divergence=True)`` costs on the CPU: the ``cpp`` round with its divergence phase, against
the same round without it and against the path before it (the ``cpp`` round, then ``reference.divergence_args``:
PyTorch ops over the materialized distributions).

Providers, timed interleaved (``common.measure_interleaved`` with the wall clock: round r starts at provider r mod 3,
so drifting load spreads over all of them):

* ``cpp``: ``verify(..., backend="cpp")``;
* ``cpp+divergence``: ``verify(..., return_divergence=True, backend="cpp")`` (``verify_divergence_native``);
* ``cpp+reference-divergence``: ``verify(..., backend="cpp")`` then ``reference.divergence_args`` (the old path).

The default shape is the quality budget's: B = 8, K = 12, V = 151936, fp32. The machine's load (``os.getloadavg``,
before and after) goes into every row's note: on a shared machine the figures are only as good as that.

    python bench/bench_divergence.py [--rules opt chow token_v1 lossy] [--temperature 1.0] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import speccas_kernels as sk  # noqa: E402
from speccas_kernels import checks, reference  # noqa: E402

from bench import common  # noqa: E402


def inputs(B: int, K: int, V: int, seed: int = 0):
    """Correlated drafter / target logits (fp32) and drafts sampled from the drafter at T = 1."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(B, K + 1, V, generator=g) * 2.5
    zp = base + torch.randn(B, K + 1, V, generator=g) * 1.25
    zq = base[:, :K] + torch.randn(B, K, V, generator=g) * 1.25
    x = torch.stack([sk.sample(zq[:, i], seed=seed, offset=i, backend="cpp") for i in range(K)], 1)
    return zq, zp, x


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--K", type=int, default=12)
    ap.add_argument("--V", type=int, default=151936)
    ap.add_argument("--rules", nargs="+", default=["opt", "chow", "token_v1", "lossy"])
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--budget-s", type=float, default=20.0, help="time budget per provider and rule")
    ap.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="folder for divergence_<device>.csv")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)

    dev = torch.device("cpu")
    zq, zp, x = inputs(a.B, a.K, a.V)
    sink = None if a.no_write else common.CsvSink(common.results_path(a.out, "divergence", dev))
    print(f"B={a.B} K={a.K} V={a.V} fp32 T={a.temperature}, {torch.get_num_threads()} threads")
    print(f"{'rule':<10} {'provider':<26} {'median ms':>10} {'p20':>8} {'p80':>8}   load before/after")
    for rule in a.rules:
        kw = dict(rule=rule, temperature=a.temperature, seed=1, offset=0)
        args = checks.check_verify(zq, zp, x, num_draft_tokens=None, vocab_size=None, validate=False, top_k=None,
                                   top_p=None, min_p=None, alpha=None, **kw)
        fns = {
            "cpp": [lambda: sk.verify(zq, zp, x, **kw, backend="cpp")],
            "cpp+divergence": [lambda: sk.verify(zq, zp, x, **kw, return_divergence=True, backend="cpp")],
            "cpp+reference-divergence": [lambda: (sk.verify(zq, zp, x, **kw, backend="cpp"),
                                                  reference.divergence_args(args))],
        }
        load0 = os.getloadavg()[0]
        timings, errors = common.measure_interleaved(fns, dev, graph={}, rounds=a.rounds, sample_s=0.0,
                                                     budget_s=a.budget_s)
        load1 = os.getloadavg()[0]
        note = f"load {load0:.2f}/{load1:.2f} on {os.cpu_count()} cores, T={a.temperature}, interleaved"
        for name, t in timings.items():
            print(f"{rule:<10} {name:<26} {t.median_us / 1e3:>10.1f} {t.p20_us / 1e3:>8.1f} {t.p80_us / 1e3:>8.1f}"
                  f"   {load0:.2f}/{load1:.2f}")
            if sink:
                sink.write(dict(op="verify_divergence", provider=name, rule=rule, B=a.B, K=a.K, V=a.V, dtype="fp32",
                                median_us=t.median_us, p20_us=t.p20_us, p80_us=t.p80_us,
                                device=common.device_name(dev), commit=common.git_commit(), date=common.iso_date(),
                                note=f"{note}; {t.mode}"))
        for name, e in errors.items():
            print(f"{rule:<10} {name:<26} failed: {e}")


if __name__ == "__main__":
    main()
