"""Count device-to-host reads in every frame: the package's, transformers', torch's Python code.

A *host read* is any call that needs a tensor's values on the host: on a GPU each one waits for the
device to finish (a sync). ``count_host_reads()`` counts them however they are reached, with two
instruments at once:

* a ``TorchDispatchMode`` that sees every aten op dispatched while it is active, from Python or
  C++ callers: ``_local_scalar_dense`` (what ``item()``, ``bool()``, ``int()``, ``float()`` and
  ``if tensor:`` dispatch to), ops whose output shape depends on values (``nonzero``,
  ``masked_select``, ``unique``, boolean-mask indexing, ``repeat_interleave`` without a size),
  ops that return a Python bool (``equal``, ``is_nonzero``), and copies to the CPU from another
  device;
* patches of the ``torch.Tensor`` methods that read memory without dispatching an op on CPU
  tensors: ``tolist``, ``numpy`` and ``cpu``.

On CPU tensors nothing waits, but the same calls would sync on a GPU, so a count taken on the CPU
with tiny models is the count the loop would pay on a device. Each call counts once, whatever its
size (``tolist()`` of 4 numbers is one read).

    with count_host_reads() as reads:
        speccas.generate(...)
    print(reads.total, reads.by_kind)
"""

from __future__ import annotations

import collections
import contextlib
import sys
import traceback
from typing import Dict, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten

# aten ops that always read values on the host (their output shape or Python result depends on them)
_READ_OPS = {
    _aten._local_scalar_dense.default: "item/bool/int/float",
    _aten.nonzero.default: "nonzero",
    _aten.argwhere.default: "nonzero",
    _aten.masked_select.default: "masked_select",
    _aten.equal.default: "equal",
    _aten.is_nonzero.default: "is_nonzero",
    _aten._unique2.default: "unique",
    _aten.unique_dim.default: "unique",
    _aten.unique_consecutive.default: "unique",
    _aten.bincount.default: "bincount",
}
_BOOL_INDEX_OPS = {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default,
                   _aten._index_put_impl_.default}


class HostReads:
    """The counts of one ``count_host_reads()`` block: ``total``, ``by_kind`` and, with ``where=True``,
    the innermost frame of each read outside torch (``sites``)."""

    def __init__(self, where: bool):
        self.by_kind: Dict[str, int] = collections.Counter()
        self.sites: List[str] = []
        self._where = where

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def add(self, kind: str) -> None:
        self.by_kind[kind] += 1
        if self._where:
            site = "?"
            for fs in reversed(traceback.extract_stack()[:-2]):
                path = fs.filename.replace("\\", "/")
                if path != __file__ and "/torch/" not in path:
                    site = f"{fs.filename}:{fs.lineno} ({fs.name})"
                    break
            self.sites.append(f"{kind} at {site}")


class _ReadMode(TorchDispatchMode):
    def __init__(self, reads: HostReads):
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _READ_OPS.get(func)
        if kind is None and func in _BOOL_INDEX_OPS:
            idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in idx or ()):
                kind = "boolean-mask index"
        if kind is None and func is _aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            kind = "repeat_interleave"
        if kind is None and func is _aten._to_copy.default:
            src = args[0]
            dev = kwargs.get("device")
            if dev is not None and torch.device(dev).type == "cpu" and src.device.type != "cpu":
                kind = "copy to cpu"
        if kind is not None:
            self.reads.add(kind)
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_host_reads(where: bool = False):
    """Count every device-to-host read made inside the block, in any frame (see the module docstring).

    ``where=True`` also records the innermost non-torch frame of each read (slower; for debugging)."""
    reads = HostReads(where)
    patched = {}

    def wrap(name, orig):
        def method(self, *a, **k):
            reads.add(name)
            with _suspended(mode):
                return orig(self, *a, **k)
        method.__name__ = name
        return method

    mode = _ReadMode(reads)
    for name in ("tolist", "numpy", "cpu"):
        patched[name] = getattr(torch.Tensor, name)
        setattr(torch.Tensor, name, wrap(name, patched[name]))
    try:
        with mode:
            yield reads
    finally:
        for name, orig in patched.items():
            setattr(torch.Tensor, name, orig)


@contextlib.contextmanager
def _suspended(mode):
    """Run a patched method's body without the dispatch mode seeing it again (one read, one count)."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    if _get_current_dispatch_mode() is mode:
        with torch.utils._python_dispatch._disable_current_modes():
            yield
    else:
        yield


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m speccas.hostreads
    with count_host_reads(where=True) as r:
        t = torch.arange(5)
        bool(t.sum() > 0), t.tolist(), t[t > 2]
    print(r.total, dict(r.by_kind), *r.sites, sep="\n", file=sys.stderr)
