"""Real generation for the cascade sweep (``bench/cascade_sweep.py --phases generate``): the settings the
analysis chose (``cascade_sweep_choice.json``: the best cascade at the generation budget per domain and T) and
exact speculative decoding at the same draft policy and T, through ``speccas.generate`` on the real pair.

Items are held out from the analysis (HumanEval/40.. and Lee articles 40.. by default), batch 1:

* HumanEval: ``bench/humaneval.py``'s harness (raw code completion in chunks, cut at the first stop sequence,
  the tests run in a time- and memory-limited subprocess): pass@1 with one sample.
* prose: the article's first 48 tokens, then ``--max-new-tokens`` new tokens (no EOS stop). Quality: the
  target's log-likelihood of the generated tokens (one scoring forward of the target, not counted as cost):
  ``loglik_t1`` = mean log p^ (T = 1) per token, and at T > 0 ``loglik_T`` under the sampling distribution;
  at T = 0 also agreement with the target's own greedy text, which exact speculative decoding reproduces
  token for token (SPEC.md section 3): tokens up to the first difference, and identical texts.

Cost: target forwards per generated token, from ``GenerationOutput`` (prefills included; HumanEval's chunks
re-prefill). Every row records its wall time and the load average before and after it (this CPU is shared).
Rows are appended to the JSONL as they finish; a rerun skips (domain, item, config, seed) rows already there.
``--gen-seeds`` repeats every run with other seeds (seed-major: every item of a seed before the next seed); the
report pools the seeds per item, its intervals resampling items (a problem's seeds are not independent).
``--gen-minutes`` stops starting new runs after that many minutes; jobs alternate between the domains and
the configs of an item run together, so a stopped run leaves paired, balanced rows.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from speccas import analysis as an

SEED = 0


def add_arguments(ap):
    g = ap.add_argument_group("generation (--phases generate)")
    g.add_argument("--gen-humaneval", type=int, nargs=2, default=[40, 56], metavar=("START", "STOP"),
                   help="HumanEval problems START..STOP-1 (held out from the analysis)")
    g.add_argument("--gen-prose", type=int, nargs=2, default=[40, 48], metavar=("START", "STOP"),
                   help="Lee articles START..STOP-1 (held out from the analysis)")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--prose-new-tokens", type=int, default=96)
    g.add_argument("--chunk", type=int, default=64, help="HumanEval: new tokens per generate call")
    g.add_argument("--timeout", type=float, default=10.0, help="HumanEval: seconds per test program")
    g.add_argument("--gen-minutes", type=float, default=None, help="start no new run after this many minutes")
    g.add_argument("--gen-temperatures", type=float, nargs="+", default=None,
                   help="run only the chosen settings at these temperatures (default: every chosen one)")
    g.add_argument("--gen-seeds", type=int, nargs="+", default=[SEED],
                   help="run every (item, config) once per seed (default: %(default)s)")


# ----------------------------------------------------------------------------------------------- tiny models

class CharTokenizer:
    """Characters as ids (tiny models): enough of a Hugging Face tokenizer for the sweep and the harness."""

    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_tensors=None):
        ids = [ord(c) % 128 for c in text]
        return {"input_ids": torch.tensor([ids], dtype=torch.int64) if return_tensors == "pt" else ids}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if 0 < i < 128)


def tiny_pair():
    """A tiny random Llama target (vocabulary 128), a drafter that is the target plus noise, characters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
                      eos_token_id=None, bos_token_id=None, pad_token_id=None)
    target = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        target.lm_head.weight.mul_(20.0)  # peaked logits: drafts are accepted sometimes, rules see confidence
    drafter = LlamaForCausalLM(cfg).eval()
    drafter.load_state_dict(target.state_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in drafter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3 * p.std().clamp(min=1e-3))
    return target, drafter, CharTokenizer()


# ----------------------------------------------------------------------------------------------- configs

def configs(choice: dict, domain: str, seed: int = SEED) -> List[dict]:
    """The generation configs of ``domain``: per chosen T, speculative decoding and the best cascade, same policy;
    ``seed`` is the row's, not part of the config's name."""
    out = []
    for key, c in choice.items():
        if c["domain"] != domain:
            continue
        pol = f"K{c['K']}" + (f"h{c['threshold']:g}" if c["threshold"] else "")
        base = dict(temperature=c["temperature"], seed=seed, K=c["K"], threshold=c["threshold"], policy=c["policy"],
                    alpha_source=f"cascade_sweep_choice.json[{key}]")
        out.append(dict(base, name=f"speculative@{pol}@T{c['temperature']:g}", method="speculative",
                        rule="speculative", alpha=None))
        method = "lossy" if c["rule"] == "lossy" else "cascade"
        out.append(dict(base, name=f"{c['rule']}@a{c['alpha']:.4g}@{pol}@T{c['temperature']:g}", method=method,
                        rule=c["rule"], alpha=c["alpha"], predicted_ratio=c["predicted_ratio"],
                        predicted_tv=c["predicted_tv"]))
    return out


def load_rows(path) -> List[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------- runs

def _provenance(t0: float, load0: float) -> dict:
    import sys

    from common import git_commit, iso_date

    return dict(commit=git_commit(), date=iso_date(), machine=f"{os.cpu_count()} CPU cores, "
                f"{torch.get_num_threads()} torch threads, torch {torch.__version__}", run_seconds=time.time() - t0,
                load_start=round(load0, 2), load_end=round(os.getloadavg()[0], 2), python=sys.version.split()[0])


def run_humaneval(pair, item: dict, cfg: dict, args) -> dict:
    import argparse

    import humaneval as he

    target, drafter, tok = pair
    hargs = argparse.Namespace(K=cfg["K"], draft_threshold=cfg["threshold"], max_new_tokens=args.max_new_tokens,
                               chunk=args.chunk, timeout=args.timeout)
    hcfg = dict(name=cfg["name"], method=cfg["method"], rule=None if cfg["method"] == "speculative" else cfg["rule"],
                alpha=cfg["alpha"], temperature=cfg["temperature"], seed=cfg["seed"],
                alpha_source=cfg["alpha_source"])
    if cfg["method"] == "speculative":
        hcfg["rule"] = "speculative"
    row = he.run_one(target, drafter, tok, item["problem"], hcfg, hargs)
    row["item"] = row.pop("task_id")
    return row


@torch.no_grad()
def score(target, prompt: Sequence[int], new: Sequence[int], temperature: float) -> dict:
    """The target's mean log-probability per generated token (T = 1, and at ``temperature`` when > 0)."""
    ids = torch.tensor([list(prompt) + list(new)], dtype=torch.int64)
    z = target(ids).logits[0, len(prompt) - 1: len(prompt) - 1 + len(new)].double()
    y = torch.tensor(list(new), dtype=torch.int64)[:, None]
    out = dict(loglik_t1=float(torch.log_softmax(z, -1).gather(-1, y).mean()))
    if temperature > 0:
        out["loglik_T"] = float(torch.log_softmax(z / temperature, -1).gather(-1, y).mean())
    return out


def run_prose(pair, item: dict, cfg: dict, args) -> dict:
    import speccas

    target, drafter, tok = pair
    kw = dict(method=cfg["method"], num_draft_tokens=cfg["K"], draft_threshold=cfg["threshold"],
              temperature=cfg["temperature"], max_new_tokens=args.prose_new_tokens, eos_token_id=[], seed=cfg["seed"])
    if cfg["method"] == "cascade":
        kw["rule"] = cfg["rule"]
    if cfg["alpha"] is not None:
        kw["alpha"] = cfg["alpha"]
    ids = torch.tensor([item["prompt_ids"]], dtype=torch.int64)
    out = speccas.generate(target, drafter, ids, **kw)
    new = out.tokens[0]
    row = dict(item=item["id"], config=cfg["name"], method=cfg["method"], rule=cfg["rule"], alpha=cfg["alpha"],
               K=cfg["K"], temperature=cfg["temperature"], seed=cfg["seed"], tokens=new, new_tokens=len(new),
               target_forwards=out.target_forwards, drafter_forwards=out.drafter_forwards, drafted=out.drafted,
               accepted=out.accepted, deferral_rate=out.deferral_rate, wall_time=out.wall_time,
               acceptance_rate=out.acceptance_rate, text=tok.decode(new, skip_special_tokens=True))
    row.update(score(target, item["prompt_ids"], new, cfg["temperature"]))
    row["target_forwards_per_token"] = row["target_forwards"] / len(new) if new else None
    return row


def run(choice: dict, args, pair_fn, path: Path, tiny: bool = False) -> int:
    """Run every pending (domain, item, config); returns how many rows were added."""
    from tqdm import tqdm

    import sweep_data as sd

    if getattr(args, "gen_temperatures", None) is not None:
        choice = {k: c for k, c in choice.items() if c["temperature"] in args.gen_temperatures}
    done = {(r["domain"], r["item"], r["config"], r.get("seed", SEED)) for r in load_rows(path)}
    spans = {"humaneval": args.gen_humaneval, "prose": args.gen_prose}
    if tiny:
        spans = {"humaneval": (0, 2), "prose": (0, 2)}
        args.max_new_tokens, args.prose_new_tokens, args.chunk = 10, 8, 6
    domains = [d for d in sd.DOMAINS if any(c["domain"] == d for c in choice.values())]
    pair = None
    # per seed, jobs alternate between domains, item by item; an item's configs run together (paired rows)
    jobs = []
    for seed in getattr(args, "gen_seeds", None) or [SEED]:
        per_domain = {d: [(i, configs(choice, d, seed)) for i in range(*spans[d])] for d in domains}
        for k in range(max((len(v) for v in per_domain.values()), default=0)):
            for d in domains:
                if k < len(per_domain[d]):
                    i, cfgs = per_domain[d][k]
                    jobs += [(d, i, c) for c in cfgs]
    t_start = time.time()
    added = 0
    items_cache: Dict[tuple, dict] = {}
    bar = tqdm(total=len(jobs), desc="generation", unit="run")
    for d, i, cfg in jobs:
        bar.update(1)
        if args.gen_minutes is not None and time.time() - t_start > 60 * args.gen_minutes:
            tqdm.write(f"--gen-minutes {args.gen_minutes} reached: stopping (rerun to resume)")
            break
        if pair is None:
            pending = [j for j in jobs if (j[0], _item_id(j[0], j[1], tiny), j[2]["name"], j[2]["seed"]) not in done]
            if not pending:
                break
            pair = pair_fn()
        if (d, i) not in items_cache:
            its = sd.items(d, pair[2], i, i + 1, tiny=tiny)
            items_cache[(d, i)] = its[0] if its else None
        item = items_cache[(d, i)]
        if item is None or (d, item["id"], cfg["name"], cfg["seed"]) in done:
            continue
        t0, load0 = time.time(), os.getloadavg()[0]
        torch.manual_seed(cfg["seed"])
        row = run_humaneval(pair, item, cfg, args) if d == "humaneval" else run_prose(pair, item, cfg, args)
        row.update(domain=d, config=cfg["name"], policy=cfg["policy"], threshold=cfg["threshold"],
                   predicted_ratio=cfg.get("predicted_ratio"), predicted_tv=cfg.get("predicted_tv"),
                   **_provenance(t0, load0))
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        added += 1
        done.add((d, item["id"], cfg["name"], cfg["seed"]))
        tqdm.write(f"{d} {item['id']} {cfg['name']} seed {cfg['seed']}: {row['new_tokens']} tokens, "
                   f"{row['target_forwards']} target fwd"
                   f"{', ' + row['result'][:40] if 'result' in row else ''}, {row['run_seconds']:.0f} s, "
                   f"load {row['load_start']}-{row['load_end']}")
    bar.close()
    return added


def _item_id(domain: str, i: int, tiny: bool) -> str:
    if domain == "humaneval":
        return f"HumanEval/{i}"
    return f"lee/{i}"


# ----------------------------------------------------------------------------------------------- report

def _wilson(k: int, n: int):
    import humaneval_report as hr

    return hr.wilson(k, n)


def _ci_ratio_of_ratios(num_a, den_a, num_b, den_b, n_boot=2000, seed=SEED):
    """(sum num_a / sum den_a) / (sum num_b / sum den_b) over paired items, with a 95% bootstrap interval."""
    num_a, den_a, num_b, den_b = (np.asarray(x, dtype=np.float64) for x in (num_a, den_a, num_b, den_b))
    W = an.bootstrap_weights(len(num_a), n_boot, seed)
    est = (num_a.sum() / den_a.sum()) / (num_b.sum() / den_b.sum())
    boots = ((W @ num_a) / (W @ den_a)) / ((W @ num_b) / (W @ den_b))
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return est, lo, hi


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _per_item(runs: Sequence[dict], key: str, weight: str = None) -> np.ndarray:
    """Per item (sorted), the sum over its seeds of ``key`` (times ``weight`` when given)."""
    out: Dict[str, float] = {}
    for r in runs:
        out[r["item"]] = out.get(r["item"], 0.0) + float(r[key]) * (float(r[weight]) if weight else 1.0)
    return np.array([out[i] for i in sorted(out)])


def _forwards_ratio(c: Sequence[dict], s: Sequence[dict]):
    """Target forwards per token, cascade over speculative, with seeds pooled per item and items resampled."""
    return _ci_ratio_of_ratios(_per_item(c, "target_forwards"), _per_item(c, "new_tokens"),
                               _per_item(s, "target_forwards"), _per_item(s, "new_tokens"))


def _runs_line(runs: Sequence[dict]) -> str:
    loads = [r[k] for r in runs for k in ("load_start", "load_end") if r.get(k) is not None]
    dates = sorted(r["date"][:16].replace("T", " ") for r in runs)
    end = dates[-1][11:] if dates[-1][:10] == dates[0][:10] else dates[-1]
    return (f"Runs: {dates[0]} to {end} UTC, "
            f"{'; '.join(sorted({r['machine'] for r in runs}))}, commit(s) "
            f"{', '.join(sorted({r['commit'] for r in runs}))}, load average {min(loads):.1f} to {max(loads):.1f}, "
            f"{sum(r['run_seconds'] for r in runs) / 60:.0f} min.\n")


def section(rows: Sequence[dict], choice: dict) -> str:
    """The generation section of the report: per domain and T, the cascade against speculative decoding on the
    (item, seed) runs both have; several seeds are pooled per item, and intervals resample items."""
    md = ["## Real generation: the chosen settings against speculative decoding\n",
          "Batch 1 through `speccas.generate` on the real pair (int8 drafter), items held out from the analysis. "
          "Cost: target forwards per generated token (prefills included), measured. Brackets: 95% intervals "
          "(bootstrap over items for ratios and log-likelihoods, a problem's seeds pooled; Wilson over runs for "
          "pass@1). Every run's wall time and load average are in `cascade_sweep_generation.jsonl`.\n"]
    loads = [r[k] for r in rows for k in ("load_start", "load_end") if r.get(k) is not None]
    if loads:
        md.append(f"Load average during the runs: {min(loads):.1f} to {max(loads):.1f} on "
                  f"{'; '.join(sorted({r['machine'] for r in rows}))}; total run time "
                  f"{sum(r['run_seconds'] for r in rows) / 60:.0f} min, "
                  f"{rows[0]['date'][:10]} to {rows[-1]['date'][:10]}, commits "
                  f"{', '.join(sorted({r['commit'] for r in rows}))}.\n")
    for d in ("humaneval", "prose"):
        for T in sorted({r["temperature"] for r in rows if r["domain"] == d}):
            rs = [r for r in rows if r["domain"] == d and r["temperature"] == T]
            spec = {(r["item"], r.get("seed", SEED)): r for r in rs if r["method"] == "speculative"}
            others = sorted({r["config"] for r in rs if r["method"] != "speculative"})
            for name in others:
                casc = {(r["item"], r.get("seed", SEED)): r for r in rs if r["config"] == name}
                keys = sorted(set(casc) & set(spec))
                if not keys:
                    continue
                s = [spec[k] for k in keys]
                c = [casc[k] for k in keys]
                items = sorted({k[0] for k in keys})
                seeds = sorted({k[1] for k in keys})
                est, lo, hi = _forwards_ratio(c, s)
                pred = c[0].get("predicted_ratio")
                md.append(f"### {d}, T = {T:g}: {name} against {s[0]['config']} ({len(items)} items: "
                          f"{items[0]} .. {items[-1]}; seed{'s' if len(seeds) > 1 else ''} "
                          f"{', '.join(map(str, seeds))}: {len(keys)} runs each)\n")
                md.append(_runs_line(s + c))
                head = "| config | target fwd/token | tokens/target fwd | acceptance | tokens | wall s |"
                sep = "|---|--:|--:|--:|--:|--:|"
                if d == "humaneval":
                    head += " pass@1 [95% CI] |"
                    sep += "---|"
                else:
                    head += " target log p^ per token [95% CI] |"
                    sep += "---|"
                    if T == 0:
                        head += " = target's greedy text | tokens before the first difference |"
                        sep += "--:|--:|"
                md += [head, sep]
                for label, rr in (("speculative", s), (name, c)):
                    F = sum(r["target_forwards"] for r in rr)
                    N = sum(r["new_tokens"] for r in rr)
                    acc = sum(r["accepted"] or 0 for r in rr) / max(1, sum(r["drafted"] or 0 for r in rr))
                    line = (f"| {label} | {F / N:.3f} | {N / F:.2f} | {acc:.3f} | {N} | "
                            f"{sum(r['wall_time'] for r in rr):.0f} |")
                    if d == "humaneval":
                        k = sum(bool(r["passed"]) for r in rr)
                        wl, wh = _wilson(k, len(rr))
                        line += f" {k}/{len(rr)} = {k / len(rr):.2f} [{wl:.2f}, {wh:.2f}] |"
                    else:
                        ll = an.bootstrap_ratio(_per_item(rr, "loglik_t1", "new_tokens")[:, None],
                                                _per_item(rr, "new_tokens"), seed=SEED)
                        line += f" {ll[0][0]:.3f} [{ll[1][0]:.3f}, {ll[2][0]:.3f}] |"
                        if T == 0:
                            ref = [spec[(r["item"], r.get("seed", SEED))]["tokens"] for r in rr]
                            same = sum(r["tokens"] == t for r, t in zip(rr, ref))
                            pref = np.mean([_common_prefix(r["tokens"], t) for r, t in zip(rr, ref)])
                            line += f" {same}/{len(rr)} | {pref:.1f} |"
                    md.append(line)
                md.append("")
                md.append(f"- Target forwards per token, cascade / speculative: **{est:.3f}** [{lo:.3f}, {hi:.3f}] "
                          f"measured; the analysis predicted {pred:.3f}." if pred is not None else
                          f"- Target forwards per token, cascade / speculative: **{est:.3f}** [{lo:.3f}, {hi:.3f}].")
                if len(seeds) > 1:
                    per_seed = []
                    for sd_ in seeds:
                        e = _forwards_ratio([r for r in c if r.get("seed", SEED) == sd_],
                                            [r for r in s if r.get("seed", SEED) == sd_])
                        per_seed.append(f"seed {sd_}: {e[0]:.3f} [{e[1]:.3f}, {e[2]:.3f}]")
                    md.append(f"- Each seed alone: {'; '.join(per_seed)}.")
                if d == "humaneval":
                    gain = sum(bool(casc[k]["passed"]) and not spec[k]["passed"] for k in keys)
                    loss = sum(spec[k]["passed"] and not casc[k]["passed"] for k in keys)
                    md.append(f"- Paired with speculative decoding (same item and seed): the cascade passes {gain} "
                              f"run(s) speculative fails and fails {loss} it passes.")
                else:
                    d_ll = np.array([casc[k]["loglik_t1"] - spec[k]["loglik_t1"] for k in keys])
                    per = np.array([d_ll[[k[0] == i for k in keys]].mean() for i in items])
                    e = an.bootstrap_ratio(per[:, None], np.ones(len(items)), seed=SEED)
                    md.append(f"- Target log-likelihood per token, cascade minus speculative (mean over articles"
                              f"{', seeds averaged per article' if len(seeds) > 1 else ''}): "
                              f"{e[0][0]:+.3f} [{e[1][0]:+.3f}, {e[2][0]:+.3f}] nats.")
                md.append("")
    return "\n".join(md)
