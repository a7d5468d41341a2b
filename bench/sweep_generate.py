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
Rows are appended to the JSONL as they finish; a rerun skips (domain, item, config) rows already there.
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

def configs(choice: dict, domain: str) -> List[dict]:
    """The generation configs of ``domain``: per chosen T, speculative decoding and the best cascade, same policy."""
    out = []
    for key, c in choice.items():
        if c["domain"] != domain:
            continue
        pol = f"K{c['K']}" + (f"h{c['threshold']:g}" if c["threshold"] else "")
        base = dict(temperature=c["temperature"], seed=SEED, K=c["K"], threshold=c["threshold"], policy=c["policy"],
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
    done = {(r["domain"], r["item"], r["config"]) for r in load_rows(path)}
    spans = {"humaneval": args.gen_humaneval, "prose": args.gen_prose}
    if tiny:
        spans = {"humaneval": (0, 2), "prose": (0, 2)}
        args.max_new_tokens, args.prose_new_tokens, args.chunk = 10, 8, 6
    domains = [d for d in sd.DOMAINS if any(c["domain"] == d for c in choice.values())]
    per_domain = {}
    pair = None
    for d in domains:
        cfgs = configs(choice, d)
        start, stop = spans[d]
        per_domain[d] = [(i, cfgs) for i in range(start, stop)]
    # jobs alternate between domains, item by item; an item's configs run together (paired rows)
    jobs = []
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
            pending = [j for j in jobs if (j[0], _item_id(j[0], j[1], tiny), j[2]["name"]) not in done]
            if not pending:
                break
            pair = pair_fn()
        if (d, i) not in items_cache:
            its = sd.items(d, pair[2], i, i + 1, tiny=tiny)
            items_cache[(d, i)] = its[0] if its else None
        item = items_cache[(d, i)]
        if item is None or (d, item["id"], cfg["name"]) in done:
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
        done.add((d, item["id"], cfg["name"]))
        tqdm.write(f"{d} {item['id']} {cfg['name']}: {row['new_tokens']} tokens, {row['target_forwards']} target fwd"
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


def section(rows: Sequence[dict], choice: dict) -> str:
    """The generation section of the report: per domain and T, the cascade against speculative decoding on the
    items both have."""
    md = ["## Real generation: the chosen settings against speculative decoding\n",
          "Batch 1 through `speccas.generate` on the real pair (int8 drafter), items held out from the analysis. "
          "Cost: target forwards per generated token (prefills included), measured. Brackets: 95% intervals "
          "(bootstrap over items for ratios and log-likelihoods, Wilson for pass@1). Every run's wall time and "
          "load average are in `cascade_sweep_generation.jsonl`.\n"]
    loads = [r[k] for r in rows for k in ("load_start", "load_end") if r.get(k) is not None]
    if loads:
        md.append(f"Load average during the runs: {min(loads):.1f} to {max(loads):.1f} on "
                  f"{rows[0]['machine']}; total run time {sum(r['run_seconds'] for r in rows) / 60:.0f} min, "
                  f"{rows[0]['date'][:10]} to {rows[-1]['date'][:10]}, commits "
                  f"{', '.join(sorted({r['commit'] for r in rows}))}.\n")
    for d in ("humaneval", "prose"):
        for T in sorted({r["temperature"] for r in rows if r["domain"] == d}):
            rs = [r for r in rows if r["domain"] == d and r["temperature"] == T]
            spec = {r["item"]: r for r in rs if r["method"] == "speculative"}
            others = sorted({r["config"] for r in rs if r["method"] != "speculative"})
            for name in others:
                casc = {r["item"]: r for r in rs if r["config"] == name}
                items = sorted(set(casc) & set(spec))
                if not items:
                    continue
                s = [spec[i] for i in items]
                c = [casc[i] for i in items]
                est, lo, hi = _ci_ratio_of_ratios([r["target_forwards"] for r in c], [r["new_tokens"] for r in c],
                                                  [r["target_forwards"] for r in s], [r["new_tokens"] for r in s])
                pred = c[0].get("predicted_ratio")
                md.append(f"### {d}, T = {T:g}: {name} against {s[0]['config']} ({len(items)} items: "
                          f"{items[0]} .. {items[-1]})\n")
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
                        ll = an.bootstrap_ratio(np.array([r["loglik_t1"] * r["new_tokens"] for r in rr])[:, None],
                                                np.array([r["new_tokens"] for r in rr], dtype=float), seed=SEED)
                        line += f" {ll[0][0]:.3f} [{ll[1][0]:.3f}, {ll[2][0]:.3f}] |"
                        if T == 0:
                            same = sum(r["tokens"] == spec[r["item"]]["tokens"] for r in rr)
                            pref = np.mean([_common_prefix(r["tokens"], spec[r["item"]]["tokens"]) for r in rr])
                            line += f" {same}/{len(rr)} | {pref:.1f} |"
                    md.append(line)
                md.append("")
                md.append(f"- Target forwards per token, cascade / speculative: **{est:.3f}** [{lo:.3f}, {hi:.3f}] "
                          f"measured; the analysis predicted {pred:.3f}." if pred is not None else
                          f"- Target forwards per token, cascade / speculative: **{est:.3f}** [{lo:.3f}, {hi:.3f}].")
                if d == "humaneval":
                    gain = sum(bool(casc[i]["passed"]) and not spec[i]["passed"] for i in items)
                    loss = sum(spec[i]["passed"] and not casc[i]["passed"] for i in items)
                    md.append(f"- Paired with speculative decoding: the cascade passes {gain} problem(s) speculative "
                              f"fails and fails {loss} it passes.")
                else:
                    d_ll = np.array([casc[i]["loglik_t1"] - spec[i]["loglik_t1"] for i in items])
                    e = an.bootstrap_ratio(d_ll[:, None], np.ones(len(items)), seed=SEED)
                    md.append(f"- Target log-likelihood per token, cascade minus speculative (mean over articles): "
                              f"{e[0][0]:+.3f} [{e[1][0]:+.3f}, {e[2][0]:+.3f}] nats.")
                md.append("")
    return "\n".join(md)
