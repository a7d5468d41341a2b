"""``generate(compile=True)`` on the real pair: compile time and steady-state gain against eager.

    python bench/compile_steps.py          # about 10-20 minutes on 2 quiet cores (the compile dominates)

Qwen2.5-Coder 0.5B -> 1.5B (float32 target, the package's default drafter precision), HumanEval/0 prompt,
greedy, ``--max-new-tokens`` tokens, method ``speculative`` with the package defaults. One eager warm-up,
then the first compiled call (its wall time minus an eager call's is the compile time), then
``--repeats`` eager and compiled calls interleaved. Writes ``bench/results/compile_cpu.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit, iso_date  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="speculative")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    from profile_round import prompt_ids
    from speccas.demo import load_drafters
    from speccas.generate import generate
    from speccas.models import DEFAULT_DRAFTER_PRECISION, load_real_pair

    target, drafter, tok = load_real_pair(args.cache_dir)
    drafter = load_drafters(drafter, [DEFAULT_DRAFTER_PRECISION])[DEFAULT_DRAFTER_PRECISION]
    ids = prompt_ids(tok, 0)
    kw = dict(method=args.method, max_new_tokens=args.max_new_tokens, eos_token_id=[])
    load0 = os.getloadavg()[0]

    def timed(compiled):
        t0 = time.perf_counter()
        out = generate(target, drafter, ids, compile=compiled, **kw)
        return time.perf_counter() - t0, out

    timed(False)  # warm-up
    eager0, ref = timed(False)
    first, out = timed(True)
    same = out.tokens == ref.tokens
    times = {False: [], True: []}
    for _ in range(args.repeats):
        for c in (False, True):
            times[c].append(timed(c)[0])
    e, c = statistics.median(times[False]), statistics.median(times[True])
    load = f"{load0:.1f}-{os.getloadavg()[0]:.1f}"
    n = ref.new_tokens
    md = (f"# `generate(compile=True)` on the real pair (`bench/compile_steps.py`)\n\n"
          f"commit {git_commit()}, {iso_date()}, {device_name(torch.device('cpu'))}, load average {load}; "
          f"{args.method}, HumanEval/0, greedy, {n} new tokens, drafter {DEFAULT_DRAFTER_PRECISION}.\n\n"
          f"| | seconds | tokens/s |\n|---|--:|--:|\n"
          f"| eager (median of {args.repeats}) | {e:.1f} | {n / e:.2f} |\n"
          f"| compiled (median of {args.repeats}, after the first call) | {c:.1f} | {n / c:.2f} |\n"
          f"| compiled, first call (compiles) | {first:.1f} | {n / first:.2f} |\n\n"
          f"Compile time about {first - eager0:.0f} s; steady-state gain {e / c:.2f}x; compiled tokens equal "
          f"the eager ones: {same}.\n")
    print(md)
    if not args.no_write:
        (ROOT / "bench" / "results" / "compile_cpu.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
