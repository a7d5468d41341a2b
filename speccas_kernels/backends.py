"""Backend dispatch: one small registry instead of ``if backend ==`` chains.

A backend is a module exposing ``verify_args(VerifyArgs) -> VerifyOutput`` and
``sample_args(SampleArgs) -> Tensor`` plus ``available() -> (bool, reason)``. Modules are imported
lazily, on first use, so importing ``speccas_kernels`` needs neither a GPU nor the compiled
extension.

``backend="auto"`` picks, by the device of the inputs:

* CUDA: ``triton``, then ``cuda`` (CUDA C++), then ``reference``;
* CPU: ``cpp`` (native C++), then ``reference``.

``triton`` also runs on CPU tensors when ``TRITON_INTERPRET=1`` is set (the test suite does this);
``auto`` never picks it there.
"""

from __future__ import annotations

import functools
import importlib
from typing import NamedTuple, Tuple


class Backend(NamedTuple):
    name: str
    module: str  # imported lazily
    devices: Tuple[str, ...]  # device types it accepts


BACKENDS = {
    b.name: b
    for b in (
        Backend("reference", "speccas_kernels.reference", ("cpu", "cuda")),  # plain PyTorch, the executable spec
        Backend("triton", "speccas_kernels.triton_backend", ("cuda", "cpu")),  # fused Triton kernels
        Backend("cpp", "speccas_kernels.native", ("cpu",)),  # native C++ CPU extension
        Backend("cuda", "speccas_kernels.native", ("cuda",)),  # CUDA C++ extension
    )
}

AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpp", "reference")}


@functools.cache
def _load(name: str):
    """(module or None, reason) for a backend; cached, so a missing extension is probed once."""
    b = BACKENDS[name]
    try:
        mod = importlib.import_module(b.module)
    except ImportError as e:  # e.g. triton not installed
        return None, f"cannot import {b.module}: {e}"
    ok, reason = mod.available(name) if hasattr(mod, "available") else (True, "")
    return (mod if ok else None), reason


def available(name: str) -> Tuple[bool, str]:
    """Whether a backend can run here, and why not."""
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; expected 'auto' or one of {', '.join(BACKENDS)}")
    mod, reason = _load(name)
    return mod is not None, reason


def resolve(name: str, device):
    """The backend module for `name` ("auto" or a registered name) and tensors on `device`."""
    dev_type = device.type
    if name == "auto":
        for candidate in AUTO_ORDER.get(dev_type, ("reference",)):
            mod, _ = _load(candidate)
            if mod is not None and dev_type in BACKENDS[candidate].devices:
                return mod
        raise RuntimeError(f"backend: no backend can run on device {device}")
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; expected 'auto' or one of {', '.join(BACKENDS)}")
    b = BACKENDS[name]
    if dev_type not in b.devices:
        raise ValueError(f"backend: {name!r} runs on {' or '.join(b.devices)} tensors, got tensors on {device}")
    mod, reason = _load(name)
    if mod is None:
        raise RuntimeError(f"backend: {name!r} is not available here: {reason}")
    return mod
