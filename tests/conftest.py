"""Shared pytest setup: the Triton interpreter on CPU machines, the cuda marker, devices."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import interpreter_skip_repatching  # noqa: E402 (imports torch only; triton when called)

# Triton kernels run on the CPU through the interpreter when no GPU is present. This must be set
# before triton is imported anywhere.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


if os.environ.get("TRITON_INTERPRET") == "1":
    interpreter_skip_repatching()

# Under pytest-xdist (``make test`` runs one worker per core) the workers share the cores: torch's threads are split
# among them rather than each worker starting one per core.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` run first (each keeps its place among them): under pytest-xdist a long test that comes last
    in the order runs alone at the end on one worker (the sm_90 compile of every verify variant takes minutes with
    Triton's compile cache cold, as on CI). Tests marked `cuda` need a GPU: on a CPU machine they are deselected
    (reported as such), never counted as passed or skipped."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
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
