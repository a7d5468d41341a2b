"""Where cascades pay (issue 16): every rule against exact speculative decoding at matched quality.

    python bench/cascade_sweep.py                        # teacher-forced sweep of both domains + report
    python bench/cascade_sweep.py --phases synthetic     # the acceptance sweep (a weaker drafter, simulated)
    python bench/cascade_sweep.py --phases generate      # real generation to confirm (resumable, ~90 min)
    python bench/cascade_sweep.py --phases report        # the report again from the committed rows
    python bench/cascade_sweep.py --phases choose        # the choice file again from the committed rows
    python bench/cascade_sweep.py --tiny --out /tmp/x    # every phase on tiny random models (seconds)

**The analysis** (``--phases analysis``; ``speccas.analysis``, teacher-forced: one forward of each model per
text, cached under ``$SPECCAS_CACHE/analysis``, see ``bench/sweep_data.py`` for the two domains). Grid: draft
policies K in {4, 8, 12} and the decode loop's adaptive drafting (up to ``DEFAULT_NUM_DRAFT_TOKENS`` drafts,
stop after the first with max q^ < ``DEFAULT_DRAFT_THRESHOLD``; modelled by ``analysis.draft_counts``: a round
from t drafts through the first position whose teacher-forced drafter confidence is below the threshold, as
``bench/draft_length.py`` does) x T in {0, 0.7, 1} x every rule of ``speccas_kernels.rules.RULES`` x a grid
of alpha per rule (``sweep_grid``: the rule's analysis grid, its ``speculative_at`` / ``drafter_at`` ends,
and the midpoints of the grid's half nearest the exact end, where matched-quality settings live). Per
setting: target forwards per token, its ratio to exact speculative decoding at the same policy and T, the
quality TV(law, p) and the gap E_law[log p] - E_p[log p] (T > 0), each with a 95% bootstrap interval over
texts (``analysis.bootstrap_ratio``; every setting uses the same resamples, so ratios are paired). The
drafter runs at ``speccas.models.DEFAULT_DRAFTER_PRECISION`` (int8 on the CPU), as the decode loop's
default does.

**Matched quality**: for a TV budget (``BUDGETS``), a rule's best setting is its cheapest (policy, alpha)
whose corpus TV is within the budget; the report compares it with speculative decoding at the same policy
and T. The settings confirmed by generation are the best cascade at ``GEN_BUDGET`` per domain and T in
``GEN_TEMPERATURES`` (``cascade_sweep_choice.json``; ``--phases choose`` rewrites it from the committed
``cascade_sweep.csv`` without analysing again, keeping its corpora).

**The synthetic sweep** (``--phases synthetic``): the drafter's logits plus Gaussian noise of growing
standard deviation (``SIGMAS``; the bucket column of the pruned vocabulary is left alone), which lowers the
speculative acceptance from this pair's ~0.9 towards 0.5: what the same analysis predicts for a pair whose
drafter agrees less with its target.

**Real generation** (``--phases generate``, ``bench/sweep_generate.py``): the chosen settings and their
speculative baselines through ``speccas.generate`` on the real pair, HumanEval problems and news documents
held out from the analysis; see that module.

Outputs under ``bench/results/``: ``cascade_sweep.csv`` (every analysed setting, with machine, date,
commit and load), ``cascade_sweep_synthetic.csv``, ``cascade_sweep_generation.jsonl``,
``cascade_sweep_choice.json``, ``cascade_sweep.md`` (generated: do not edit) and the plots
``cascade_sweep_tv.png``, ``cascade_sweep_loglik.png``, ``cascade_sweep_synthetic.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sweep_data as sd  # noqa: E402
from common import device_name, git_commit, iso_date  # noqa: E402

from speccas import analysis as an  # noqa: E402
from speccas.generate import DEFAULT_DRAFT_THRESHOLD, DEFAULT_NUM_DRAFT_TOKENS  # noqa: E402
from speccas_kernels.rules import RULE_INFO, RULES  # noqa: E402

RESULTS = ROOT / "bench" / "results"
POLICIES = (an.DraftPolicy(4), an.DraftPolicy(8), an.DraftPolicy(12),
            an.DraftPolicy(DEFAULT_NUM_DRAFT_TOKENS, DEFAULT_DRAFT_THRESHOLD))
TEMPERATURES = (0.0, 0.7, 1.0)
BUDGETS = (0.01, 0.02, 0.05)
GEN_BUDGET = 0.02
GEN_TEMPERATURES = (0.0, 0.7, 1.0)
SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0)
SYNTHETIC_POLICIES = (an.DraftPolicy(4), POLICIES[-1])
SYNTHETIC_TEMPERATURES = (0.0, 1.0)
N_BOOT = 1000
SEED = 0
CASCADES = tuple(r for r in RULES if r != "speculative")

ROW_KEYS = ("domain", "sigma", "temperature", "policy", "K", "threshold", "rule", "alpha", "texts", "positions",
            "deferral", "accept", "tokens_per_round", "forwards_per_token", "forwards_lo", "forwards_hi",
            "spec_forwards_per_token", "cost_ratio", "ratio_lo", "ratio_hi", "tv", "tv_lo", "tv_hi", "kl",
            "loglik", "loglik_gap", "gap_lo", "gap_hi", "law_tail")
PROVENANCE = ("machine", "date", "commit", "load")


# ----------------------------------------------------------------------------------------------- settings

def sweep_grid(rule: str) -> List[float]:
    """The alphas of ``rule``: its analysis grid, its claimed ends, and the midpoints of the grid's first half
    (the exact end, where the settings of small TV are), sorted from the exact end."""
    info = RULE_INFO[rule]
    if not info.uses_alpha:
        return [0.0]
    g = list(info.grid)
    half = g[: len(g) // 2 + 1]
    mids = [round(0.5 * (a + b), 10) for a, b in zip(half, half[1:]) if max(abs(a), abs(b)) < 100]
    ends = [a for a in info.speculative_at[:1] + info.drafter_at[:1]]
    return sorted(set(g) | set(mids) | set(ends), reverse=g[0] > g[-1])


def provenance() -> dict:
    return dict(machine=device_name(torch.device("cpu")), date=iso_date(), commit=git_commit(),
                load=f"{os.getloadavg()[0]:.1f}")


# ----------------------------------------------------------------------------------------------- analysis

def analysis_rows(res: an.Analysis, domain: str, *, policies, n_boot: int = N_BOOT, sigma: float = 0.0) -> List[dict]:
    """One row per (policy, rule, alpha) of one analysed temperature, with bootstrap intervals over texts."""
    spec = res.curves["speculative"]
    L = spec.lengths
    T = res.temperature
    rows = []
    for pol in policies:
        spec_R = spec.text_forwards[pol][0]
        spec_fpt = float(spec.forwards_per_token[pol][0])
        for rule, c in res.curves.items():
            R = c.text_forwards[pol].T  # [n, A]
            fpt = an.bootstrap_ratio(R, L, n_boot=n_boot, seed=SEED)
            ratio = an.bootstrap_ratio(R, spec_R, n_boot=n_boot, seed=SEED)
            tv = an.bootstrap_ratio(c.text_sums["tv"].T, L, n_boot=n_boot, seed=SEED)
            if T > 0:
                gap = an.bootstrap_ratio((c.text_sums["loglik"] - spec.text_sums["loglik"][0]).T, L, n_boot=n_boot,
                                         seed=SEED)
            else:
                gap = tuple(np.full(len(c.alphas), math.nan) for _ in range(3))
            for i, a in enumerate(c.alphas):
                rows.append(dict(
                    domain=domain, sigma=sigma, temperature=T, policy=pol.name, K=pol.K, threshold=pol.threshold,
                    rule=rule, alpha=a, texts=len(L), positions=int(L.sum()), deferral=c.deferral[i],
                    accept=c.accept[i], tokens_per_round=c.tokens_per_round[pol][i],
                    forwards_per_token=fpt[0][i], forwards_lo=fpt[1][i], forwards_hi=fpt[2][i],
                    spec_forwards_per_token=spec_fpt, cost_ratio=ratio[0][i], ratio_lo=ratio[1][i],
                    ratio_hi=ratio[2][i], tv=tv[0][i], tv_lo=tv[1][i], tv_hi=tv[2][i], kl=c.kl[i],
                    loglik=c.loglik[i], loglik_gap=gap[0][i], gap_lo=gap[1][i], gap_hi=gap[2][i],
                    law_tail=c.law_tail[i]))
    return rows


def analyse_domain(corpus: an.LogitCorpus, domain: str, *, temperatures, policies, grids, n_boot, sigma=0.0,
                   progress=True) -> List[dict]:
    rows = []
    for T in temperatures:
        res = an.analyze(corpus, grids=grids, Ks=tuple(policies), temperature=T, progress=progress)
        rows += analysis_rows(res, domain, policies=policies, n_boot=n_boot, sigma=sigma)
    return rows


def perturbed(corpus: an.LogitCorpus, sigma: float, seed: int = SEED) -> an.LogitCorpus:
    """The corpus with the drafter's logits plus N(0, sigma^2) noise per kept token (not the bucket column)."""
    if sigma == 0:
        return corpus
    g = torch.Generator().manual_seed(seed)
    zq = []
    for z in corpus.zq:
        noise = torch.randn(z.shape, generator=g) * sigma
        if corpus.top_k is not None:
            noise[:, -1] = 0.0
        zq.append(z + noise.to(z.dtype))
    return an.LogitCorpus(zq, corpus.zp, names=corpus.names, top_k=corpus.top_k, tail_q=corpus.tail_q,
                          tail_p=corpus.tail_p, meta=dict(corpus.meta, sigma=sigma))


# ----------------------------------------------------------------------------------------------- choices

def _f(x) -> float:
    return float(x) if x not in (None, "") else math.nan


def best_at_budget(rows: Sequence[dict], budget: float, rules=CASCADES) -> Dict[str, dict]:
    """{rule: its cheapest row (lowest cost ratio) with TV within ``budget``}, over policies and alphas."""
    best = {}
    for r in rows:
        if r["rule"] in rules and _f(r["tv"]) <= budget + 1e-12:
            b = best.get(r["rule"])
            if b is None or (_f(r["cost_ratio"]), _f(r["tv"])) < (_f(b["cost_ratio"]), _f(b["tv"])):
                best[r["rule"]] = r
    return best


def select(rows, **kw) -> List[dict]:
    return [r for r in rows if all((_f(r[k]) == v) if isinstance(v, float) else (r[k] == v) for k, v in kw.items())]


def overall_best(rows, budget) -> Optional[dict]:
    b = best_at_budget(rows, budget)
    return min(b.values(), key=lambda r: (_f(r["cost_ratio"]), _f(r["tv"]))) if b else None


def choose_settings(rows, domains, temperatures=GEN_TEMPERATURES, budget=GEN_BUDGET) -> dict:
    """Per domain and T: the best cascade at ``budget`` (the generation phase confirms it) and its baseline."""
    out = {}
    for d in domains:
        for T in temperatures:
            b = overall_best(select(rows, domain=d, temperature=float(T), sigma=0.0), budget)
            if b is None:
                continue
            out[f"{d}@T{T:g}"] = dict(domain=d, temperature=float(T), rule=b["rule"], alpha=_f(b["alpha"]),
                                      K=int(b["K"]), threshold=_f(b["threshold"]), policy=b["policy"],
                                      budget=budget, predicted_ratio=_f(b["cost_ratio"]), predicted_tv=_f(b["tv"]),
                                      predicted_forwards=_f(b["forwards_per_token"]),
                                      predicted_spec_forwards=_f(b["spec_forwards_per_token"]))
    return out


def cross_domain_alpha(rows, rule: str, policy: str, T: float, budget: float, domains) -> Optional[dict]:
    """The largest alpha of ``rule`` (nearest the drafter end) whose TV is within ``budget`` on every domain,
    walking the grid from the exact end, with each domain's cost ratio there."""
    per = {d: {round(_f(r["alpha"]), 6): r for r in select(rows, domain=d, rule=rule, policy=policy, temperature=T,
                                                            sigma=0.0)} for d in domains}
    if not all(per.values()):
        return None
    grid = [round(a, 6) for a in sweep_grid(rule)]
    chosen = None
    for a in grid:
        if all(a in per[d] and _f(per[d][a]["tv"]) <= budget for d in domains):
            chosen = a
        else:
            break
    if chosen is None:
        return None
    return dict(rule=rule, alpha=chosen, **{d: per[d][chosen] for d in domains})


# ----------------------------------------------------------------------------------------------- CSV

def write_rows(path: Path, rows: Sequence[dict], prov: dict):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROW_KEYS) + list(PROVENANCE))
        w.writeheader()
        for r in rows:
            w.writerow({**{k: (f"{v:.6g}" if isinstance(v, (float, np.floating)) else v) for k, v in r.items()},
                        **prov})


def read_rows(path: Path) -> List[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------- plots

COLORS = dict(chow="C0", diff="C1", opt="C2", token_v1="C3", token_v2="C4", token_v3="C5", lossy="C6",
              ensemble="C7")


def frontier(points):
    """The lower-left Pareto frontier of (x, y) points (lower is better on both), sorted by x."""
    pts = sorted(points)
    out, best = [], math.inf
    for x, y in pts:
        if y < best - 1e-15:
            out.append((x, y))
            best = y
    return out


def plot_quality(rows, path: Path, domains, temperatures, metric: str, prov: dict, title: str):
    """One panel per (domain, T): each rule's frontier over policies and alphas, cost ratio against quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(domains), len(temperatures), figsize=(4.6 * len(temperatures), 3.9 * len(domains)),
                             squeeze=False)
    for i, d in enumerate(domains):
        for j, T in enumerate(temperatures):
            ax = axes[i][j]
            rs = select(rows, domain=d, temperature=float(T), sigma=0.0)
            for rule in CASCADES:
                pts = [(_f(r["cost_ratio"]), -_f(r["loglik_gap"]) if metric == "loglik" else _f(r["tv"]))
                       for r in rs if r["rule"] == rule]
                pts = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
                fr = frontier(pts)
                if fr:
                    ax.plot(*zip(*fr), "-o", ms=2.5, lw=1.2, color=COLORS.get(rule), label=rule)
            ax.axvline(1.0, color="k", lw=0.8, ls=":")
            if metric == "tv":
                for b in BUDGETS:
                    ax.axhline(b, color="gray", lw=0.6, ls="--")
                ax.set_yscale("symlog", linthresh=1e-3)
                ax.set_ylim(0, 1)
                ax.set_ylabel("TV(law, p)" if T else "P(token != target's greedy)")
            else:
                ax.set_yscale("symlog", linthresh=1e-3)
                ax.set_ylabel("E_p[log p] - E_law[log p]  (nats/token)")
            ax.set_xlim(0.3, 1.15)
            ax.set_xlabel("target forwards per token / speculative's (same K, T)")
            ax.set_title(f"{d}, T = {T:g}", fontsize=10)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{title}\n{prov['machine']}, {prov['date'][:10]}, commit {prov['commit']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_synthetic(rows, path: Path, prov: dict):
    """Predicted saving against speculative acceptance: best cascade ratio at each TV budget vs the noise level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["domain"], _f(r["temperature"]), r["policy"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.8), squeeze=False)
    for ax, (d, T, pol) in zip(axes[0], keys):
        for b, ls in zip(BUDGETS, ("-", "--", ":")):
            xs, ys = [], []
            for s in sorted({_f(r["sigma"]) for r in rows}):
                rs = select(rows, domain=d, temperature=T, policy=pol, sigma=s)
                spec = [r for r in rs if r["rule"] == "speculative"]
                best = overall_best(rs, b)
                if spec and best:
                    xs.append(_f(spec[0]["accept"]))
                    ys.append(_f(best["cost_ratio"]))
            ax.plot(xs, ys, "o" + ls, label=f"TV <= {b:.0%}")
        ax.set_xlabel("speculative acceptance E[a]")
        ax.set_ylabel("best cascade / speculative (target fwd)")
        ax.set_title(f"{d}, T = {T:g}, {pol}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"weaker drafters, simulated (drafter logits + noise)\n{prov['machine']}, {prov['date'][:10]}, "
                 f"commit {prov['commit']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- report

def _pct(x, d=1) -> str:
    return "—" if not math.isfinite(_f(x)) else f"{100 * _f(x):.{d}f}%"


def _ci(r, k, lo, hi, d=3, pct=False) -> str:
    fmt = (lambda x: _pct(x, 2)) if pct else (lambda x: f"{_f(x):.{d}f}")
    if not math.isfinite(_f(r[k])):
        return "—"
    return f"{fmt(r[k])} [{fmt(r[lo])}, {fmt(r[hi])}]"


def _setting(r) -> str:
    a = "" if r["rule"] == "speculative" else f" α={_f(r['alpha']):.4g}"
    return f"{r['rule']}{a}, {r['policy']}"


def report(rows, syn_rows, gen_section: str, choice: dict, domains, prov: dict, corpora: dict, args) -> str:
    md = ["# Where cascades pay: every rule against exact speculative decoding at matched quality", "",
          f"Generated by `python bench/cascade_sweep.py` ({prov['date']}, commit `{prov['commit']}`, "
          f"{prov['machine']}, load {prov['load']} when the analysis rows were written). Do not edit: the reading "
          f"is in README.md, \"Quality vs cost: where cascades pay\".", "",
          "Pair: Qwen2.5-Coder-0.5B-Instruct (drafter, int8 dynamic quantization, the decode loop's CPU default) -> "
          "Qwen2.5-Coder-1.5B-Instruct (target, float32). Method: teacher-forced (`speccas.analysis`: one forward "
          "of each model per text; drafts scored on the reference prefix; acceptances independent), the rule math "
          "of `speccas_kernels.reference`; top 2047 tokens + one bucket per position. Cost = expected target "
          "forwards per token; **ratio** = that over exact speculative decoding's at the same draft policy and T "
          "(< 1: the cascade saves target forwards). Quality = TV(law, p) per emitted token (at T = 0: the "
          "probability of emitting something other than the target's greedy token) and the log-likelihood gap "
          "E_law[log p] - E_p[log p] (nats per token, T > 0). Brackets: 95% bootstrap intervals over texts "
          f"({N_BOOT} resamples, paired across settings).", ""]
    md.append("| domain | texts | positions | what |\n|---|--:|--:|---|")
    for d in domains:
        c = corpora.get(d, {})
        md.append(f"| {d} | {c.get('texts', '?')} | {c.get('positions', '?')} | {c.get('what', '')} |")
    md.append("")
    md.append("Draft policies: `K4`, `K8`, `K12` (fixed length) and "
              f"`{POLICIES[-1].name}` (the decode loop's adaptive default: up to {POLICIES[-1].K} drafts, stop after "
              f"the first with max q^ < {POLICIES[-1].threshold:g}; `analysis.draft_counts`).")
    md.append("")

    # the baseline
    md.append("## Exact speculative decoding (the baseline)\n")
    md.append("| domain | T | " + " | ".join(f"{p.name} fwd/token" for p in POLICIES) + " | E[accept] |")
    md.append("|---|--:|" + "--:|" * (len(POLICIES) + 1))
    for d in domains:
        for T in TEMPERATURES:
            rs = select(rows, domain=d, temperature=float(T), sigma=0.0, rule="speculative")
            if not rs:
                continue
            cells = []
            for p in POLICIES:
                r = next((x for x in rs if x["policy"] == p.name), None)
                cells.append(_ci(r, "forwards_per_token", "forwards_lo", "forwards_hi") if r else "—")
            md.append(f"| {d} | {T:g} | " + " | ".join(cells) + f" | {_f(rs[0]['accept']):.3f} |")
    md.append("")

    # headline
    md.append("## The best cascade at matched quality\n")
    md.append("Per domain, T and TV budget: the cheapest (rule, alpha, policy) over every rule but speculative, "
              "and speculative decoding at the same policy and T.\n")
    md.append("| domain | T | TV budget | best setting | its fwd/token | speculative's | ratio [95% CI] | "
              "TV [95% CI] | loglik gap [95% CI] |\n|---|--:|--:|---|--:|--:|---|---|---|")
    for d in domains:
        for T in TEMPERATURES:
            rs = select(rows, domain=d, temperature=float(T), sigma=0.0)
            for b in BUDGETS:
                best = overall_best(rs, b)
                if best is None:
                    md.append(f"| {d} | {T:g} | {b:.0%} | none within budget | | | | | |")
                    continue
                md.append(f"| {d} | {T:g} | {b:.0%} | {_setting(best)} | {_f(best['forwards_per_token']):.3f} | "
                          f"{_f(best['spec_forwards_per_token']):.3f} | "
                          f"{_ci(best, 'cost_ratio', 'ratio_lo', 'ratio_hi')} | {_ci(best, 'tv', 'tv_lo', 'tv_hi', pct=True)} "
                          f"| {_ci(best, 'loglik_gap', 'gap_lo', 'gap_hi', d=4)} |")
    md.append("")

    # per rule
    md.append("## Each rule's best setting at matched quality\n")
    md.append("Cell: cost ratio against speculative decoding at the same policy and T [95% CI], then the "
              "setting (policy, alpha). — : no alpha of the grid within the budget.\n")
    for d in domains:
        for T in TEMPERATURES:
            rs = select(rows, domain=d, temperature=float(T), sigma=0.0)
            if not rs:
                continue
            md.append(f"### {d}, T = {T:g}\n")
            md.append("| rule | " + " | ".join(f"TV <= {b:.0%}" for b in BUDGETS) + " |\n|---|" + "---|" * len(BUDGETS))
            per = [best_at_budget(rs, b) for b in BUDGETS]
            for rule in CASCADES:
                cells = []
                for bb in per:
                    r = bb.get(rule)
                    cells.append("—" if r is None else f"{_ci(r, 'cost_ratio', 'ratio_lo', 'ratio_hi')} "
                                 f"({r['policy']}, α={_f(r['alpha']):.4g})")
                md.append(f"| {rule} | " + " | ".join(cells) + " |")
            md.append("")

    # one setting for both domains (the demo's default)
    md.append("## One setting for both domains (greedy, the adaptive policy)\n")
    md.append(f"For each rule, the alpha nearest the drafter end whose greedy disagreement stays within the budget "
              f"on every domain (walking the grid from the exact end), policy `{POLICIES[-1].name}`, T = 0: what a "
              f"default has to satisfy.\n")
    md.append("| TV budget | rule | alpha | " + " | ".join(f"{d}: ratio, TV" for d in domains) + " |\n|--:|---|--:|"
              + "---|" * len(domains))
    for b in BUDGETS:
        for rule in CASCADES:
            x = cross_domain_alpha(rows, rule, POLICIES[-1].name, 0.0, b, domains)
            if x is None:
                continue
            cells = [f"{_f(x[d]['cost_ratio']):.3f}, {_pct(x[d]['tv'], 2)}" for d in domains]
            md.append(f"| {b:.0%} | {rule} | {x['alpha']:.4g} | " + " | ".join(cells) + " |")
    md.append("")

    if choice:
        md.append("## Settings confirmed by generation\n")
        md.append(f"The best cascade at TV <= {GEN_BUDGET:.0%} per domain and T (`cascade_sweep_choice.json`).\n")
        md.append("| domain | T | rule | alpha | policy | predicted ratio | predicted TV |\n|---|--:|---|--:|---|--:|--:|")
        for k, c in choice.items():
            md.append(f"| {c['domain']} | {c['temperature']:g} | {c['rule']} | {c['alpha']:.4g} | {c['policy']} | "
                      f"{c['predicted_ratio']:.3f} | {_pct(c['predicted_tv'], 2)} |")
        md.append("")
    if gen_section:
        md.append(gen_section)
    if syn_rows:
        md.append(synthetic_section(syn_rows))
    md.append("## Plots\n")
    md.append("![TV vs cost](cascade_sweep_tv.png)\n\n![log-likelihood gap vs cost](cascade_sweep_loglik.png)\n")
    if syn_rows:
        md.append("![weaker drafters](cascade_sweep_synthetic.png)\n")
    md.append(f"Every row: `cascade_sweep.csv` ({len(rows)} settings). Reproduce: `python bench/cascade_sweep.py`"
              f"{' --tiny' if args.tiny else ''}.")
    return "\n".join(md) + "\n"


def synthetic_section(rows) -> str:
    md = ["## Weaker drafters, simulated: where cascades would pay\n",
          "The HumanEval corpus with the drafter's logits plus Gaussian noise (sigma per kept token; same target). "
          "Per noise level: speculative decoding's acceptance and cost, the drafter's own divergence from the "
          "target (TV(q, p), the drafter-target gap), and the best cascade's cost ratio at each TV budget.\n",
          "| T | policy | sigma | spec E[accept] | spec fwd/token | drafter TV(q, p) | "
          + " | ".join(f"best at TV <= {b:.0%}" for b in BUDGETS) + " |",
          "|--:|---|--:|--:|--:|--:|" + "---|" * len(BUDGETS)]
    keys = sorted({(_f(r["temperature"]), r["policy"]) for r in rows})
    for T, pol in keys:
        for s in sorted({_f(r["sigma"]) for r in rows}):
            rs = select(rows, temperature=T, policy=pol, sigma=s)
            spec = [r for r in rs if r["rule"] == "speculative"]
            if not spec:
                continue
            drf = [r for r in rs if r["rule"] == "chow" and _f(r["alpha"]) == 1.0]
            cells = []
            for b in BUDGETS:
                best = overall_best(rs, b)
                cells.append("—" if best is None else f"{_f(best['cost_ratio']):.3f} ({best['rule']} "
                             f"α={_f(best['alpha']):.3g})")
            md.append(f"| {T:g} | {pol} | {s:g} | {_f(spec[0]['accept']):.3f} | "
                      f"{_f(spec[0]['forwards_per_token']):.3f} | {_pct(drf[0]['tv']) if drf else '—'} | "
                      + " | ".join(cells) + " |")
    md.append("")
    return "\n".join(md)


# ----------------------------------------------------------------------------------------------- main

def tiny_setup(out: Path):
    """Tiny random models, a character tokenizer and small grids: every phase in seconds (tests, smoke runs)."""
    import sweep_generate as sg

    target, drafter, tok = sg.tiny_pair()
    global POLICIES, TEMPERATURES, SIGMAS, SYNTHETIC_POLICIES, N_BOOT
    POLICIES = (an.DraftPolicy(2), an.DraftPolicy(4, 0.5))
    TEMPERATURES = (0.0, 0.7)
    SIGMAS = (0.0, 2.0)
    SYNTHETIC_POLICIES = POLICIES[-1:]
    N_BOOT = 50
    grids = {r: sorted({RULE_INFO[r].grid[0], RULE_INFO[r].grid[len(RULE_INFO[r].grid) // 2], RULE_INFO[r].grid[-1]},
                       reverse=RULE_INFO[r].grid[0] > RULE_INFO[r].grid[-1]) for r in RULES}
    return (lambda: (target, drafter, tok)), grids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", nargs="+", default=["analysis", "report"],
                    choices=["analysis", "choose", "synthetic", "generate", "report"])
    ap.add_argument("--domains", nargs="+", default=list(sd.DOMAINS), choices=sd.DOMAINS)
    ap.add_argument("--texts", type=int, default=40, help="texts per domain in the analysis (the first N)")
    ap.add_argument("--top-k", type=int, default=2047)
    ap.add_argument("--precision", default=None, help="drafter precision (default: the decode loop's CPU default)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tiny", action="store_true", help="tiny random models and small grids (smoke test)")
    import sweep_generate as sg

    sg.add_arguments(ap)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from speccas.models import DEFAULT_DRAFTER_PRECISION, cache_dir

    precision = args.precision or DEFAULT_DRAFTER_PRECISION
    if args.tiny:
        pair_fn, grids = tiny_setup(out)
        cdir = out / "cache"
        texts = min(args.texts, 3)
    else:
        pair_fn = sd.real_pair_fn(args.cache_dir, precision)
        grids = {r: sweep_grid(r) for r in RULES}
        cdir = cache_dir(args.cache_dir) / "analysis"
        texts = args.texts
    pair = {}

    def shared_pair():
        if "p" not in pair:
            pair["p"] = pair_fn()
        return pair["p"]

    csv_path, syn_path = out / "cascade_sweep.csv", out / "cascade_sweep_synthetic.csv"
    choice_path = out / "cascade_sweep_choice.json"
    corpora = {}

    def corpus(d):
        c = sd.load_corpus(d, texts, cdir=cdir, precision=precision, top_k=args.top_k, pair_fn=shared_pair,
                           tiny=args.tiny)
        corpora[d] = dict(texts=len(c.zq), positions=c.num_positions, what=sd.DESCRIPTIONS[d].format(n=len(c.zq)))
        return c

    if "analysis" in args.phases:
        rows = []
        for d in args.domains:
            rows += analyse_domain(corpus(d), d, temperatures=TEMPERATURES, policies=POLICIES, grids=grids,
                                   n_boot=N_BOOT, progress=not args.tiny)
        write_rows(csv_path, rows, provenance())
    if "analysis" in args.phases or "choose" in args.phases:
        rows = read_rows(csv_path)
        if not rows:
            raise SystemExit(f"no analysis rows in {csv_path}: run --phases analysis first")
        if not corpora and choice_path.exists():
            corpora = json.loads(choice_path.read_text()).get("corpora", {})
        choice = choose_settings(rows, args.domains)
        choice_path.write_text(json.dumps(dict(choice, corpora=corpora), indent=1) + "\n")
    if "synthetic" in args.phases:
        c = corpus(args.domains[0])
        syn = []
        for s in SIGMAS:
            syn += analyse_domain(perturbed(c, s), args.domains[0], temperatures=SYNTHETIC_TEMPERATURES,
                                  policies=SYNTHETIC_POLICIES, grids=None if not args.tiny else grids, n_boot=N_BOOT,
                                  sigma=s, progress=not args.tiny)
        write_rows(syn_path, syn, provenance())
    saved = json.loads(choice_path.read_text()) if choice_path.exists() else {}
    corpora = corpora or saved.pop("corpora", {})
    saved.pop("corpora", None)
    if "generate" in args.phases:
        if not saved:
            raise SystemExit(f"--phases generate needs {choice_path} (run the analysis first)")
        sg.run(saved, args, shared_pair, out / "cascade_sweep_generation.jsonl", tiny=args.tiny)
    if "report" in args.phases or "analysis" in args.phases:
        rows, syn = read_rows(csv_path), read_rows(syn_path)
        if not rows:
            raise SystemExit(f"no analysis rows in {csv_path}: run --phases analysis first")
        prov = {k: rows[0][k] for k in PROVENANCE}
        domains = list(dict.fromkeys(r["domain"] for r in rows))
        plot_quality(rows, out / "cascade_sweep_tv.png", domains, sorted({_f(r["temperature"]) for r in rows}), "tv",
                     prov, "cost ratio vs TV(law, p): each rule's frontier over policies and alphas")
        temps = sorted({_f(r["temperature"]) for r in rows} - {0.0})
        if temps:
            plot_quality(rows, out / "cascade_sweep_loglik.png", domains, temps, "loglik", prov,
                         "cost ratio vs the target's log-likelihood lost per token")
        if syn:
            plot_synthetic(syn, out / "cascade_sweep_synthetic.png", prov)
        gen = sg.load_rows(out / "cascade_sweep_generation.jsonl")
        gen_md = sg.section(gen, saved) if gen else ""
        (out / "cascade_sweep.md").write_text(report(rows, syn, gen_md, saved, domains, prov, corpora, args))
        print(f"wrote {out / 'cascade_sweep.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
