"""Draft length from the drafter's confidence: calibrate ``draft_threshold`` and ``num_draft_tokens``.

    python bench/draft_length.py                       # 20 HumanEval texts, forward costs measured here
    python bench/draft_length.py --costs quiet         # the issue's quiet-machine forward costs instead

What it does (about 10 minutes on 2 quiet cores for the forwards, cached under ``<cache>/analysis``):

1. Teacher-forced logits of the real pair on the first ``--problems`` HumanEval texts (prompt + canonical
   solution, raw code; ``speccas.analysis.teacher_forced_logits``, top 2047 + bucket), once per drafter
   precision in ``--drafter-precisions``.
2. Per solution position t: the drafter's confidence ``c_t = max q^`` and the expected acceptance
   ``a_t`` of each setting (``speccas.analysis.position_metrics``: speculative and token_v3 at its
   default alpha, greedy and T = 1).
3. For each policy (``num_draft_tokens`` K, ``draft_threshold`` h): a round that starts at t drafts
   ``k_t = min(K, L - 1 - t, first i >= 1 with c_{t+i-1} < h)`` tokens (what ``speccas.generate`` does:
   it stops after the first unsure draft, and never drafts past what is still needed), then accepts
   ``m`` of them with the chain probabilities of the ``a``'s. The expected time to finish the text
   from t is the renewal ``R(t) = cost(k_t) + sum_m P(m accepted) R(t + m + 1)``, with
   ``cost(k) = k * drafter step + target forward of k + 1 tokens`` from the cost model. Predicted
   speedup: the target alone's cost (one 1-token forward per token) over ``sum R(0) / sum L``. Same
   teacher-forced approximation as ``speccas.analysis`` (drafts scored on the reference prefix,
   acceptances independent).

The default (``speccas.generate.DEFAULT_NUM_DRAFT_TOKENS`` / ``DEFAULT_DRAFT_THRESHOLD``) follows
``best_policy``: with the package's default drafter precision, the smallest K whose best threshold is
within 3% of the best mean predicted speedup over the greedy settings, with that threshold (in bold).
Writes ``bench/results/draft_length.csv`` and ``draft_length.md``. The committed run used
``--costs bench/results/draft_length_costs.json`` (the machine was too busy to measure forward costs;
that file says where each figure comes from).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit, iso_date  # noqa: E402

from speccas.analysis import draft_counts  # noqa: E402,F401  (k_t of a round: the analysis' adaptive-draft model)

RESULTS = ROOT / "bench" / "results"
SETTINGS = (("speculative", 0.0), ("token_v3", 0.0), ("speculative", 1.0), ("token_v3", 1.0))
KS = (4, 6, 8, 12, 16)
THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# The quiet-machine forward costs on this CPU kind (ms; 2 threads, prompt of 42 tokens in cache):
# target 1, 5, 9 tokens; drafter 1 token (float32). Linear in between.
QUIET = {"target": {1: 297.0, 5: 525.0, 9: 636.0}, "drafter": {"float32": 114.0}}


# ----------------------------------------------------------------------------------------- costs

def target_cost(costs: dict, M: int) -> float:
    """Interpolated (linear, extrapolated past the last point) target forward cost for M tokens."""
    pts = sorted((int(k), v) for k, v in costs["target"].items())
    for (m0, c0), (m1, c1) in zip(pts, pts[1:]):
        if M <= m1 or (m1, c1) == pts[-1]:
            return c0 + (c1 - c0) * (M - m0) / (m1 - m0)
    return pts[0][1]


@torch.no_grad()
def measure_costs(target, drafters: dict, reps: int = 3, P: int = 42) -> dict:
    """Interleaved forwards (min over ``reps``) of the target at 1/2/5/9 tokens and each drafter at 1."""
    from transformers import DynamicCache

    ids = torch.randint(0, 1000, (1, P), generator=torch.Generator().manual_seed(0))
    models = {"target": target, **{f"drafter:{k}": m for k, m in drafters.items()}}
    caches = {}
    for k, m in models.items():
        caches[k] = DynamicCache()
        m(input_ids=ids, use_cache=True, **{_cache_kw(m): caches[k]})
    jobs = [("target", M) for M in (1, 2, 5, 9)] + [(k, 1) for k in models if k != "target"]
    best = {}
    for _ in range(reps):
        for k, M in jobs:
            m = models[k]
            x = torch.randint(0, 1000, (1, M))
            t0 = time.perf_counter()
            m(input_ids=x, use_cache=True, **{_cache_kw(m): caches[k]})
            dt = (time.perf_counter() - t0) * 1e3
            caches[k].crop(-M)
            best[(k, M)] = min(best.get((k, M), dt), dt)
    return {"target": {M: best[("target", M)] for M in (1, 2, 5, 9)},
            "drafter": {k.split(":", 1)[1]: best[(k, 1)] for k in models if k != "target"}}


def _cache_kw(model) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


# ------------------------------------------------------------------------------------ simulation

def expected_time(a: np.ndarray, k: np.ndarray, cost) -> float:
    """R(0) for one text: expected time to emit its L tokens, rounds of k_t drafts (see the docstring)."""
    L = len(a)
    R = np.zeros(L + max(int(k.max(initial=0)), 0) + 2)
    for t in range(L - 1, -1, -1):
        kt = int(k[t])
        p_reach = 1.0  # P(the first j drafts are all accepted)
        acc = 0.0
        for m in range(kt + 1):
            p_next = p_reach * a[t + m] if m < kt else 0.0
            acc += (p_reach - p_next) * R[t + m + 1]
            p_reach = p_next
        R[t] = cost(kt) + acc
    return float(R[0])


def simulate(conf_texts, accept_texts, costs: dict, precision: str):
    """Predicted speedup over the target alone for every (K, threshold): {(K, h): speedup}."""
    c_d = costs["drafter"][precision]
    tc = {M: target_cost(costs, M) for M in range(1, max(KS) + 2)}

    def cost(kt):
        return kt * c_d + tc[kt + 1]

    total_len = sum(len(a) for a in accept_texts)
    base = tc[1] * total_len
    out = {}
    for K in KS:
        for h in THRESHOLDS:
            T = sum(expected_time(a, draft_counts(c, K, h), cost) for c, a in zip(conf_texts, accept_texts))
            out[(K, h)] = base / T
    return out


# ---------------------------------------------------------------------------------------- corpus

def corpus_for(precision: str, problems: int, cache_dir, top_k: int, pair=None):
    from speccas import analysis as an
    from speccas.models import cache_dir as _cache_dir

    path = _cache_dir(cache_dir) / "analysis" / f"draft_length_{precision}_n{problems}_top{top_k}.pt"
    if path.exists():
        return an.LogitCorpus.load(path), pair
    from quality_cost import humaneval_texts
    from speccas.models import load_real_pair, set_precision

    if pair is None:
        pair = load_real_pair(cache_dir)
    target, drafter, tok = pair
    dq = set_precision(_copy(drafter), None if precision == "float32" else precision)
    texts, names = humaneval_texts(tok, problems)
    corpus = an.teacher_forced_logits(target, dq, texts, top_k=top_k, names=names, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    corpus.save(path)
    return corpus, pair


def _copy(model):
    import copy

    return copy.deepcopy(model)


def per_position(corpus):
    """([conf per text], {setting: [accept per text]})."""
    from speccas import analysis as an

    confs = [torch.softmax(zq.double(), -1).max(-1).values.numpy() for zq in corpus.zq]
    accepts = {}
    for rule, T in SETTINGS:
        alphas = None if rule == "speculative" else [0.5]
        accepts[(rule, T)] = [an.position_metrics(zq, zp, rule=rule, alphas=alphas, temperature=T,
                                                  bucket=True)["accept"][0].numpy()
                              for zq, zp in zip(corpus.zq, corpus.zp)]
    return confs, accepts


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    from speccas.generate import DEFAULT_DRAFT_THRESHOLD, DEFAULT_NUM_DRAFT_TOKENS
    from speccas.models import DEFAULT_DRAFTER_PRECISION

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=2047)
    ap.add_argument("--drafter-precisions", nargs="+", default=["float32", "int8"])
    ap.add_argument("--costs", default="measure", help="'measure' (here, now), 'quiet' (the issue's), or a JSON file")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    pair = None
    data = {}
    for prec in args.drafter_precisions:
        corpus, pair = corpus_for(prec, args.problems, args.cache_dir, args.top_k, pair)
        data[prec] = per_position(corpus)
        print(f"{prec}: {corpus.num_positions} positions", flush=True)
    load = f"{os.getloadavg()[0]:.1f}"
    if args.costs == "measure":
        from speccas.models import load_real_pair, set_precision

        if pair is None:
            pair = load_real_pair(args.cache_dir)
        target, drafter, _ = pair
        drafters = {p: (drafter if p == "float32" else set_precision(_copy(drafter), p))
                    for p in args.drafter_precisions}
        costs = measure_costs(target, drafters)
        load = f"{load}-{os.getloadavg()[0]:.1f}"
        source = f"measured here (min of 3, interleaved; load {load})"
    elif args.costs == "quiet":
        costs, source = QUIET, "the issue's quiet-machine figures"
        missing = [p for p in args.drafter_precisions if p not in costs["drafter"]]
        if missing:
            raise SystemExit(f"--costs quiet has no drafter cost for {missing}; use --costs measure or a JSON file")
    else:
        costs = json.loads(Path(args.costs).read_text())
        source = costs.pop("source", args.costs)
        costs["target"] = {int(k): v for k, v in costs["target"].items()}
    print("costs (ms):", json.dumps(costs), flush=True)

    rows = []
    for prec, (confs, accepts) in data.items():
        for (rule, T), acc in accepts.items():
            sp = simulate(confs, acc, costs, prec)
            for (K, h), s in sp.items():
                rows.append({"drafter": prec, "rule": rule, "temperature": T, "K": K, "threshold": h,
                             "speedup": round(s, 4), "mean_accept": round(float(np.mean(np.concatenate(acc))), 4)})
    default_prec = DEFAULT_DRAFTER_PRECISION if DEFAULT_DRAFTER_PRECISION in data else args.drafter_precisions[0]
    md = report(rows, costs, source, default_prec, (DEFAULT_NUM_DRAFT_TOKENS, DEFAULT_DRAFT_THRESHOLD), args)
    print(md)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / "draft_length.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        (RESULTS / "draft_length.md").write_text(md + "\n")
        if args.costs == "measure":
            (RESULTS / "draft_length_costs.json").write_text(json.dumps({"source": source, **costs}, indent=1) + "\n")
    return 0


def best_policy(rows, precision, within: float = 0.03):
    """The default's rule: the smallest K whose best threshold comes within ``within`` of the best mean predicted
    speedup over the greedy settings (longer rounds gain little past it, and the model is most optimistic about
    long rounds: teacher forcing, a linear target cost past 9 tokens), with that threshold."""
    score = {}
    for r in rows:
        if r["drafter"] == precision and r["temperature"] == 0.0:
            score.setdefault((r["K"], r["threshold"]), []).append(r["speedup"])
    mean = {k: float(np.mean(v)) for k, v in score.items()}
    top = max(mean.values())
    K = min(k for (k, _), m in mean.items() if m >= (1 - within) * top)
    return max(((k, h) for (k, h) in mean if k == K), key=lambda kh: mean[kh])


def report(rows, costs, source, precision, current, args) -> str:
    best = best_policy(rows, precision)
    lines = [
        "# Draft length: predicted speedup over the target alone, by K and draft_threshold",
        "",
        f"`python bench/draft_length.py` ({iso_date()}, commit {git_commit()}, {device_name(torch.device('cpu'))}): "
        f"the real pair, HumanEval/0..{args.problems - 1} teacher-forced (see the script's docstring for the "
        f"model). Forward costs: {source}: target "
        + ", ".join(f"{M} tok {v:.0f} ms" for M, v in sorted(costs["target"].items()))
        + "; drafter step " + ", ".join(f"{k} {v:.0f} ms" for k, v in costs["drafter"].items()) + ".",
        "",
        f"Chosen by `best_policy` for the {precision} drafter (the smallest K within 3% of the best mean over the "
        f"greedy settings, with its best threshold): **K = {best[0]}, threshold = {best[1]}**; package default now "
        f"(CPU): K = {current[0]}, threshold = {current[1]}. Absolute speedups are the model's (no prefill, no loop "
        f"overhead, teacher forcing): read them as a ranking; `bench/e2e.py` measures.",
        "",
    ]
    for prec in dict.fromkeys(r["drafter"] for r in rows):
        for rule, T in SETTINGS:
            sel = [r for r in rows if r["drafter"] == prec and r["rule"] == rule and r["temperature"] == T]
            if not sel:
                continue
            lines.append(f"### drafter {prec}, {rule}{' (alpha 0.5)' if rule != 'speculative' else ''}, T = {T:g} "
                         f"(mean acceptance {sel[0]['mean_accept']:.3f})")
            lines.append("")
            lines.append("| K \\ threshold | " + " | ".join(f"{h:g}" for h in THRESHOLDS) + " |")
            lines.append("|---|" + "--:|" * len(THRESHOLDS))
            for K in KS:
                cells = []
                for h in THRESHOLDS:
                    s = next(r["speedup"] for r in sel if r["K"] == K and r["threshold"] == h)
                    mark = "**" if (prec == precision and (K, h) == best) else ""
                    cells.append(f"{mark}{s:.2f}{mark}")
                lines.append(f"| {K} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
