"""Tables, plots and the analysis-vs-generation comparison of the HumanEval benchmark.

    python bench/humaneval.py --summary                      # print the tables
    python bench/humaneval.py --summary --write-md bench/results/humaneval_cpu.md --plot bench/results/humaneval_cpu.png

Rows are grouped by (config, alpha): a config's alpha comes from ``quality_cost_alphas.json``, which a re-run of
the analysis can move, so rows generated under another alpha stay apart. Comparisons between configs are made on
the problems they share, and each config against ``target@T0`` problem by problem (paired): pass@1 differences
of a few problems out of 40 are within the noise of one sample per problem, which the Wilson intervals show.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

REFERENCE = "target@T0"
# the greedy configurations of the headline table, in display order
KEY_GREEDY = ("target@T0", "drafter@T0", "speculative@T0", "hf_assisted@T0", "lossy@tv0.01@T0",
              "token_cascade@tv0.01@T0", "token_v3@tv0.01@T0", "opt@tv0.01@T0", "chow@tv0.01@T0",
              "token_v3@tv0.025@T0")

Key = Tuple[str, Optional[float]]


def task_num(task_id: str) -> int:
    return int(task_id.split("/")[1])


def span(task_ids: Iterable[str]) -> str:
    """``HumanEval/0..39`` for a contiguous range, else the comma-separated numbers."""
    ids = sorted(task_num(t) for t in task_ids)
    if not ids:
        return "none"
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"HumanEval/{ids[0]}..{ids[-1]}"
    return "HumanEval/" + ",".join(map(str, ids))


def wilson(k: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def group(rows: Sequence[dict]) -> Dict[Key, Dict[str, dict]]:
    """``{(config, alpha): {task_id: row}}``; the first row of a (problem, config, alpha) wins."""
    by: Dict[Key, Dict[str, dict]] = {}
    for r in rows:
        by.setdefault((r["config"], r.get("alpha")), {}).setdefault(r["task_id"], r)
    return by


def main_keys(by: Dict[Key, Dict[str, dict]]) -> Dict[str, Key]:
    """Per config name, the (config, alpha) key with the most problems (the current alpha)."""
    best: Dict[str, Key] = {}
    for k, probs in by.items():
        if k[0] not in best or len(probs) > len(by[best[k[0]]]):
            best[k[0]] = k
    return best


def _wmean(rs, key, wkey):
    pairs = [(r[key], r.get(wkey) or 0) for r in rs if r.get(key) is not None]
    w = sum(p[1] for p in pairs)
    return sum(v * wt for v, wt in pairs) / w if w else None


def stats(rs: Sequence[dict]) -> dict:
    """Pooled metrics of a set of rows (one config): sums of tokens/forwards/time, not means of ratios."""
    n = len(rs)
    k = sum(bool(r["passed"]) for r in rs)
    new = sum(r["new_tokens"] for r in rs)
    tf = sum(r["target_forwards"] for r in rs)
    wall = sum(r["wall_time"] for r in rs)
    lo, hi = wilson(k, n)
    return dict(n=n, passed=k, pass1=k / n if n else None, pass1_lo=lo, pass1_hi=hi, new_tokens=new,
                target_forwards=tf, tokens_per_target_forward=new / tf if tf else None,
                target_forwards_per_token=tf / new if new else None, tokens_per_s=new / wall if wall else None,
                acceptance=_wmean(rs, "acceptance_rate", "drafted"), deferral=_wmean(rs, "deferral_rate", "new_tokens"))


def summarize(rows: Sequence[dict], configs: Optional[Sequence[str]] = None,
              problems: Optional[Iterable[str]] = None) -> List[dict]:
    """One dict per (config, alpha), restricted to ``problems`` when given, in ``configs`` order when given."""
    by = group(rows)
    keep = set(problems) if problems is not None else None
    keys = [k for k in by if configs is None or k[0] in configs]
    if configs is not None:
        keys.sort(key=lambda k: (list(configs).index(k[0]), -len(by[k])))
    out = []
    for k in keys:
        rs = [r for t, r in by[k].items() if keep is None or t in keep]
        if rs:
            out.append(dict(config=k[0], alpha=k[1], problems=sorted((r["task_id"] for r in rs), key=task_num),
                            **stats(rs)))
    return out


_FAMILY = ("target", "drafter", "speculative", "hf_assisted", "lossy", "token_cascade", "token_v3", "opt", "chow")


def display_order(s: dict) -> tuple:
    """Sort key of a summary row: temperature, then method family, alpha and seed (file order is run order)."""
    parts = s["config"].split("@")
    temp = re.match(r"T([0-9.]+)(?:s(\d+))?$", parts[-1])
    fam = next((i for i, f in enumerate(_FAMILY) if parts[0] == f or parts[0].startswith(f + "_")), len(_FAMILY))
    return (float(temp.group(1)) if temp else 0.0, fam, parts[0], s["alpha"] if s["alpha"] is not None else 0.0,
            int(temp.group(2) or 0) if temp else 0, s["config"])


def common_problems(by: Dict[Key, Dict[str, dict]], keys: Iterable[Key]) -> List[str]:
    sets = [set(by[k]) for k in keys]
    return sorted(set.intersection(*sets), key=task_num) if sets else []


def paired(ref: Dict[str, dict], other: Dict[str, dict], problems: Iterable[str]) -> dict:
    """Problem-by-problem comparison with the reference config: who passes, and identical completions."""
    c = dict(both=0, ref_only=0, other_only=0, neither=0, identical=0, n=0)
    for t in problems:
        if t not in ref or t not in other:
            continue
        a, b = bool(ref[t]["passed"]), bool(other[t]["passed"])
        c["n"] += 1
        c["both" if a and b else "ref_only" if a else "other_only" if b else "neither"] += 1
        c["identical"] += ref[t]["completion"] == other[t]["completion"]
    return c


def speculative_for(config: str) -> str:
    """The exact speculative config at the same temperature and seed: ``chow@tv0.01@T1s2`` -> ``speculative@T1s2``."""
    return "speculative@" + config.split("@")[-1]


def forwards_change(spec: Dict, other: Dict, problems: Iterable) -> Optional[Tuple[float, int]]:
    """Relative change of target forwards per token against ``spec`` on the problems both cover (pooled sums).

    ``spec`` and ``other`` map a problem (or a (problem, seed) sample) to its row. Returns ``(change, n)``, n the
    shared keys; -0.05 means 5% fewer target forwards per generated token. None when the two share nothing or one
    of them generated no token there.
    """
    common = [t for t in problems if t in spec and t in other]
    sums = [(sum(d[t]["target_forwards"] for t in common), sum(d[t]["new_tokens"] for t in common))
            for d in (spec, other)]
    if not common or not sums[0][0] or not sums[0][1] or not sums[1][1]:
        return None
    return (sums[1][0] / sums[1][1]) / (sums[0][0] / sums[0][1]) - 1.0, len(common)


def _vs_spec(spec: Dict, other: Dict, keys: Iterable) -> str:
    """``forwards_change`` as a table cell: ``-6.9% (20)``, or ``—``."""
    change = forwards_change(spec, other, keys)
    return "—" if change is None else f"{change[0]:+.1%} ({change[1]})"


def base_name(config: str) -> str:
    """``token_v3@tv0.01@T1s2`` -> ``token_v3@tv0.01@T1`` (the seed dropped)."""
    return re.sub(r"(@T[0-9.]+)s\d+$", r"\1", config)


# ------------------------------------------------------------------------------------------ analysis link

def load_analysis(csv_path: Path, alphas_path: Optional[Path] = None) -> List[dict]:
    """The teacher-forced analysis rows (``quality_cost.csv``) plus the calibrated points of
    ``quality_cost_alphas.json`` (off the grid), as dicts with float fields."""
    import json

    out = []
    if Path(csv_path).exists():
        with open(csv_path, newline="") as f:
            for r in csv.DictReader(f):
                out.append(dict(temperature=float(r["temperature"]), rule=r["rule"], alpha=float(r["alpha"]),
                                K=int(r["K"]), deferral=float(r["deferral"]),
                                forwards_per_token=float(r["forwards_per_token"]), tv=float(r["tv"])))
    if alphas_path is not None and Path(alphas_path).exists():
        for v in json.loads(Path(alphas_path).read_text()).values():
            tpf = v.get("tokens_per_forward")
            out.append(dict(temperature=float(v["temperature"]), rule=v["rule"], alpha=float(v["alpha"]), K=int(v["K"]),
                            deferral=float(v["deferral"]), forwards_per_token=1.0 / tpf if tpf else math.inf,
                            tv=float(v["tv"])))
    return out


def predict(analysis: Sequence[dict], row: dict, K: int = 4) -> Optional[dict]:
    """The analysis' prediction for a generation config (its method, rule, alpha, temperature):
    ``forwards_per_token``, ``deferral`` and ``tv`` (at T = 0: the per-token probability of emitting something
    other than the target's greedy token). None when the analysis has no matching point."""
    method, T = row["method"], float(row["temperature"])
    if method == "target":
        return dict(forwards_per_token=1.0, deferral=1.0, tv=0.0)
    if method == "drafter":
        rule, alpha = "drafter", None
    elif method in ("speculative", "hf_assisted"):
        rule, alpha = "speculative", None
    elif method == "token_cascade":
        rule, alpha = "token_cascade", row["alpha"]
    else:
        rule, alpha = row["rule"], row["alpha"]
    cand = [a for a in analysis if a["rule"] == rule and a["K"] == K and abs(a["temperature"] - T) < 1e-9 and
            (alpha is None or abs(a["alpha"] - float(alpha)) < 1e-6)]
    if not cand and method == "token_cascade":  # token_cascade costs chow's deferral rate at the same alpha
        ch = predict(analysis, dict(row, method="cascade", rule="chow"), K)
        if ch is not None:
            return dict(forwards_per_token=ch["deferral"], deferral=ch["deferral"], tv=ch["tv"])
    if not cand:
        return None
    a = cand[-1]  # a calibrated point (listed last) beats a grid point at the same alpha
    return dict(forwards_per_token=a["forwards_per_token"], deferral=a["deferral"], tv=a["tv"])


def predicted_identical(tv: float, lengths: Sequence[int]) -> Optional[float]:
    """Teacher-forced estimate of P(completion identical to the target's): mean over problems of
    (1 - tv)^n, n the length in tokens of the target's completion (disagreements taken independent)."""
    if not lengths:
        return None
    return sum((1.0 - tv) ** n for n in lengths) / len(lengths)


# ------------------------------------------------------------------------------------------ rendering

def _f(x, d=2):
    return "—" if x is None else f"{x:.{d}f}"


def _table(summ: Sequence[dict], ref: Optional[Dict[str, dict]], by) -> List[str]:
    lines = ["| config | alpha | problems | pass@1 [95% CI] | vs target (+/−, same code) | new tokens | "
             "tokens / target fwd | target fwd / token | vs speculative (same problems) | tokens/s | acceptance | "
             "deferral |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    mk = main_keys(by)
    for s in summ:
        vs = "—"
        rows = by[(s["config"], s["alpha"])]
        if ref is not None and s["config"] != REFERENCE:
            pc = paired(ref, rows, s["problems"])
            if pc["n"]:
                vs = f"+{pc['other_only']} / −{pc['ref_only']}, {pc['identical']}/{pc['n']}"
        spec = speculative_for(s["config"])
        vs_spec = (_vs_spec(by[mk[spec]], rows, s["problems"]) if spec != s["config"] and spec in mk else "—")
        lines.append(
            f"| {s['config']} | {_f(s['alpha'], 3)} | {span(s['problems'])} ({s['n']}) | "
            f"{s['pass1']:.3f} [{s['pass1_lo']:.2f}, {s['pass1_hi']:.2f}] | {vs} | {s['new_tokens']} | "
            f"{_f(s['tokens_per_target_forward'])} | {_f(s['target_forwards_per_token'], 3)} | {vs_spec} | "
            f"{_f(s['tokens_per_s'])} | {_f(s['acceptance'])} | {_f(s['deferral'])} |")
    return lines


def analysis_rows(rows, analysis, problems, count_tokens: Optional[Callable[[str], int]] = None,
                  configs: Sequence[str] = KEY_GREEDY) -> List[dict]:
    """Per greedy config on ``problems``: predicted vs measured target forwards per token, deferral, and the
    fraction of completions identical to the target's."""
    by = group(rows)
    mk = main_keys(by)
    if REFERENCE not in mk:
        return []
    ref = by[mk[REFERENCE]]
    lengths = ([count_tokens(ref[t]["completion"]) for t in problems if t in ref] if count_tokens else [])
    out = []
    for c in configs:
        if c not in mk:
            continue
        rs = [by[mk[c]][t] for t in problems if t in by[mk[c]]]
        if not rs or float(rs[0]["temperature"]) != 0.0:
            continue
        s = stats(rs)
        pred = predict(analysis, rs[0])
        pc = paired(ref, by[mk[c]], problems)
        real_fpt = s["target_forwards_per_token"]
        out.append(dict(config=c, method=rs[0]["method"], n=s["n"], pred_fpt=pred and pred["forwards_per_token"],
                        real_fpt=real_fpt,
                        pred_deferral=(pred and pred["deferral"]
                                       if rs[0]["method"] not in ("target", "drafter") else None),
                        real_deferral=s["deferral"], tv=pred and pred["tv"],
                        pred_identical=(predicted_identical(pred["tv"], lengths) if pred and lengths else None),
                        real_identical=pc["identical"] / pc["n"] if pc["n"] else None,
                        delta_pass=(s["passed"] - sum(bool(ref[r["task_id"]]["passed"]) for r in rs)) / s["n"]))
    return out


def _analysis_table(arows: Sequence[dict]) -> List[str]:
    lines = ["| config | problems | target fwd / token: analysis | measured | measured / analysis | "
             "deferral: analysis | measured | per-token disagreement (analysis) | same code as target: "
             "analysis | measured | pass@1 − target |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in arows:
        ratio = (a["real_fpt"] / a["pred_fpt"]) if a["pred_fpt"] and a["real_fpt"] is not None else None
        lines.append(f"| {a['config']} | {a['n']} | {_f(a['pred_fpt'], 3)} | {_f(a['real_fpt'], 3)} | "
                     f"{_f(ratio)} | {_f(a['pred_deferral'])} | {_f(a['real_deferral'])} | {_f(a['tv'], 4)} | "
                     f"{_f(a['pred_identical'])} | {_f(a['real_identical'])} | {a['delta_pass']:+.3f} |")
    return lines


ANALYSIS_HEADING = "## The analysis' prediction vs the real generation (HumanEval, greedy)"


def analysis_section(rows, analysis, count_tokens=None, min_problems: int = 40) -> str:
    """The Markdown section comparing the teacher-forced analysis with the generation rows, with a reading
    computed from the numbers; empty when no greedy key config covers ``min_problems``."""
    keys, probs = headline(rows, min_problems)
    arows = analysis_rows(rows, analysis, probs, count_tokens, [k[0] for k in keys]) if keys else []
    if not arows:
        return ""
    out = [ANALYSIS_HEADING, "",
           f"Analysis: teacher-forced on the canonical solutions of HumanEval/0..39 (`quality_cost.md`), at the "
           f"config's rule, alpha and K = 4. Measured: generation rows of `humaneval_cpu.jsonl` on the "
           f"{len(probs)} problems the key configs share ({span(probs)}). *same code as target, analysis*: mean "
           "over problems of (1 − disagreement)^n, n the length in tokens of the target's completion "
           "(disagreements taken independent).", ""]
    out += _analysis_table(arows)
    out += ["", *reading_lines(arows), ""]
    return "\n".join(out)


def reading_lines(arows: Sequence[dict]) -> List[str]:
    """Facts read off the analysis-vs-generation rows (no judgement beyond the numbers)."""
    lines = []
    cost = [(a["config"], a["real_fpt"] / a["pred_fpt"]) for a in arows
            if a["pred_fpt"] and a["real_fpt"] and a["config"] != REFERENCE]
    if cost:
        lo, hi = min(cost, key=lambda c: c[1]), max(cost, key=lambda c: c[1])
        lines.append(f"- Cost: measured target forwards per token are {lo[1]:.2f}x ({lo[0]}) to {hi[1]:.2f}x "
                     f"({hi[0]}) the analysis' prediction; chunk prefills and rounds cut at a chunk's end are "
                     "in the measured count and not in the analysis.")
    ident = [(a["config"], a["pred_identical"], a["real_identical"]) for a in arows
             if a["pred_identical"] is not None and a["real_identical"] is not None and a["config"] != REFERENCE]
    if ident:
        worst = max(ident, key=lambda t: abs(t[1] - t[2]))
        lines.append(f"- Same code as the target: predicted and measured fractions differ by at most "
                     f"{abs(worst[1] - worst[2]):.2f} ({worst[0]}: {worst[1]:.2f} predicted, {worst[2]:.2f} "
                     "measured).")
    dp = [(a["config"], a["delta_pass"]) for a in arows if a["config"] != REFERENCE]
    if dp:
        lines.append("- pass@1 minus the target's, on the same problems: " +
                     ", ".join(f"{c} {d:+.3f}" for c, d in dp) + ".")
    spec = next((a for a in arows if a["config"] == "speculative@T0" and a["real_fpt"]), None)
    casc = [a for a in arows if a.get("method") in ("cascade", "lossy", "token_cascade") and a["real_fpt"]]
    if spec and casc:
        parts = [f"{a['config']} {1 - a['real_fpt'] / spec['real_fpt']:+.1%} at pass@1 {a['delta_pass']:+.3f}"
                 for a in sorted(casc, key=lambda a: a["real_fpt"])]
        n = spec["n"]
        lo, hi = wilson(n // 2, n)
        lines.append("- Target forwards saved against exact speculative decoding (measured), cheapest first: " +
                     "; ".join(parts) + f". On {n} problems one problem is {1 / n:.3f} of pass@1 and a 95% "
                     f"interval is about ±{(hi - lo) / 2:.2f} wide, so pass@1 differences of a few problems are "
                     "within noise; the paired +/− counts of the table say which problems moved.")
    return lines


def replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with the section that starts at ``heading`` (up to the next ``## `` heading) replaced by
    ``section``, or ``section`` appended when there is none."""
    if heading in text:
        a = text.index(heading)
        nxt = text.find("\n## ", a + len(heading))
        return text[:a] + section.rstrip("\n") + "\n" + (text[nxt:] if nxt >= 0 else "")
    return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


def seed_table(rows) -> List[str]:
    """T > 0 configs pooled over seeds: pass@1 per seed and pooled, cost pooled."""
    sampled = [r for r in rows if float(r["temperature"]) > 0]
    if not sampled:
        return []
    by: Dict[Tuple[str, Optional[float]], List[dict]] = {}
    for r in sampled:
        by.setdefault((base_name(r["config"]), r.get("alpha")), []).append(r)
    lines = ["| config (all seeds) | alpha | seeds | problems | pass@1 per seed | pass@1 pooled [95% CI] | "
             "tokens / target fwd | target fwd / token | vs speculative (same problems and seeds) | acceptance | "
             "deferral |",
             "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|"]

    def samples(rs):  # {(problem, seed): row}, the first row of a sample wins
        out: Dict[Tuple[str, int], dict] = {}
        for r in rs:
            out.setdefault((r["task_id"], r["seed"]), r)
        return out

    for (name, alpha), rs in by.items():
        spec, mine = speculative_for(name), samples(rs)
        vs_spec = _vs_spec(samples(by[(spec, None)]), mine, mine) if spec != name and (spec, None) in by else "—"
        seeds = sorted({r["seed"] for r in rs})
        per = []
        for sd in seeds:
            x = [r for r in rs if r["seed"] == sd]
            per.append(f"s{sd}: {sum(bool(r['passed']) for r in x)}/{len(x)}")
        s = stats(rs)
        lines.append(f"| {name} | {_f(alpha, 3)} | {len(seeds)} | {span({r['task_id'] for r in rs})} | "
                     f"{'; '.join(per)} | {s['pass1']:.3f} [{s['pass1_lo']:.2f}, {s['pass1_hi']:.2f}] | "
                     f"{_f(s['tokens_per_target_forward'])} | {_f(s['target_forwards_per_token'], 3)} | "
                     f"{vs_spec} | {_f(s['acceptance'])} | {_f(s['deferral'])} |")
    return lines


def headline(rows, min_problems: int = 40) -> Tuple[List[Key], List[str]]:
    """The greedy key configs that cover at least ``min_problems`` problems, and the problems they share."""
    by = group(rows)
    mk = main_keys(by)
    keys = [mk[c] for c in KEY_GREEDY if c in mk and len(by[mk[c]]) >= min_problems]
    return keys, common_problems(by, keys)


def report(rows: Sequence[dict], analysis: Sequence[dict] = (), count_tokens=None, min_problems: int = 40,
           plot_name: Optional[str] = None) -> str:
    """The Markdown report (without the hand-written notes)."""
    by = group(rows)
    mk = main_keys(by)
    ref = by[mk[REFERENCE]] if REFERENCE in mk else None
    keys, probs = headline(rows, min_problems)
    commits = sorted({r.get("commit", "?") for r in rows})
    dates = sorted(r["date"][:10] for r in rows if r.get("date"))
    machines = sorted({r.get("machine", "?") for r in rows})
    settings = sorted({(r.get("K"), r.get("max_new_tokens"), r.get("chunk")) for r in rows}, key=str)
    out = ["# HumanEval generation on CPU (real pair)", "",
           f"- Rows: {len(rows)} in `humaneval_cpu.jsonl`, generated {dates[0] if dates else '?'} .. "
           f"{dates[-1] if dates else '?'} at commits {', '.join(f'`{c}`' for c in commits)}.",
           f"- Machine: {'; '.join(machines)}.",
           "- Settings (K, max new tokens, chunk): " + ", ".join(str(s) for s in settings) + ".",
           "- pass@1 from one sample per problem; cost counts every target call, the prefill of each chunk "
           "included. **vs target**: problems this config passes and the target fails (+), the reverse (−), and "
           "completions identical to the target's. **vs speculative**: change in target forwards per token against "
           "exact speculative decoding at the same temperature and seed, on the problems both cover (their count in "
           "parentheses); negative is cheaper.", ""]
    if keys:
        out += [f"## Greedy, key configurations, on the {len(probs)} problems they share ({span(probs)})", ""]
        summ = [s for k in keys for s in summarize(rows, [k[0]], probs) if s["alpha"] == k[1]]
        out += _table(summ, ref, by)
        out += [""]
        if plot_name:
            out += [f"![pass@1 vs cost]({plot_name})", ""]
        sec = analysis_section(rows, analysis, count_tokens, min_problems)
        if sec:
            out += [sec]
    st = seed_table(rows)
    if st:
        out += ["## T = 1, several seeds", ""] + st + [""]
    out += ["## Every (config, alpha) and the problems it covers", ""]
    out += _table(sorted(summarize(rows), key=display_order), ref, by)
    return "\n".join(out) + "\n"


def plot(rows: Sequence[dict], path: Path, analysis: Sequence[dict] = (), min_problems: int = 40) -> Optional[Path]:
    """pass@1 (Wilson 95% bars) against target forwards per token on the shared problems (all configs, then a
    zoom on the speculative family), and the analysis' predicted cost against the measured one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, probs = headline(rows, min_problems)
    if not keys:
        return None
    summ = [s for k in keys for s in summarize(rows, [k[0]], probs) if s["alpha"] == k[1]]
    color = {s["config"]: f"C{i % 10}" for i, s in enumerate(summ)}
    marker = {s["config"]: "osD^v<>ph*"[i % 10] for i, s in enumerate(summ)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    zoom = [s for s in summ if s["target_forwards_per_token"] and s["target_forwards_per_token"] < 0.6]
    for ax, pts in ((axes[0], summ), (axes[1], zoom)):
        for s in pts:
            x, y = s["target_forwards_per_token"], s["pass1"]
            ax.errorbar([x], [y], yerr=[[y - s["pass1_lo"]], [s["pass1_hi"] - y]], fmt=marker[s["config"]],
                        color=color[s["config"]], capsize=3, label=s["config"])
        ax.set_xlabel("target forwards per generated token (lower is cheaper)")
        ax.set_ylabel(f"pass@1 on {len(probs)} problems (95% Wilson)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_title(f"HumanEval, greedy, K = 4 ({span(probs)})")
    axes[1].set_title("zoom: the methods that draft and verify")
    ax = axes[2]
    by = group(rows)
    pts = []
    for s in summ:
        r0 = next(iter(by[(s["config"], s["alpha"])].values()))
        pred = predict(analysis, r0)
        if pred is not None and s["target_forwards_per_token"] and r0["method"] != "target":
            pts.append((pred["forwards_per_token"], s["target_forwards_per_token"], s["config"]))
    if pts:
        lo = min(min(p[0], p[1]) for p in pts) * 0.9
        hi = max(max(p[0], p[1]) for p in pts) * 1.1
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="measured = analysis")
        for px, py, name in pts:
            ax.plot([px], [py], marker[name], color=color[name], label=name)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("target forwards per token, teacher-forced analysis")
    ax.set_ylabel("measured in generation (chunk prefills included)")
    ax.set_title("Analysis vs generation: cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
