"""Shared pytest setup: the Triton interpreter on CPU machines, the cuda marker, devices."""

import os

import pytest
import torch

# Triton kernels run on the CPU through the interpreter when no GPU is present. This must be set
# before triton is imported anywhere.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _interpreter_nested_calls_skip_repatching():
    """The Triton interpreter patches the language modules a nested @triton.jit function sees on every call (an
    inspect.getmembers over them each time: 40% of a verify call). Those patches are never undone, so one per
    module is enough: later calls skip it. Tests only; nothing changes on a GPU."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    if not hasattr(interpreter, "InterpretedFunction") or not hasattr(interpreter.InterpretedFunction, "rewrite"):
        return

    patched = set()

    def call(self, *args, **kwargs):
        key = id(self.fn.__globals__)  # the language modules a function sees are its module's
        if key not in patched:
            interpreter._patch_lang(self.fn)
            patched.add(key)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    interpreter.InterpretedFunction.__call__ = call


if os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_nested_calls_skip_repatching()


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a GPU: on a CPU machine they are deselected (reported as such),
    never counted as passed or skipped."""
    if torch.cuda.is_available():
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("cuda") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def device():
    """CUDA when present, else CPU (Triton then runs under TRITON_INTERPRET=1)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a whole module, restored afterwards: the modules that use it
    (``pytestmark = pytest.mark.usefixtures("one_thread")``) run many small ops or large
    elementwise int64 work, where threads only contend on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
