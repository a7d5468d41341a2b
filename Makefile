# Two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv on first use. The venv sees system site-packages, so an already-installed
# torch is used; where none is importable, the CPU build (torch==2.13.0) is installed on machines
# without an NVIDIA GPU, the default build on machines with one.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.speccas-installed
TORCH_CPU_SPEC ?= torch==2.13.0
TRITON_SPEC ?= triton==3.6.0
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: one per core (`auto`); 0 runs the suite in this process
TEST_JOBS ?= auto

.PHONY: demo test bench report install clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml $(wildcard csrc/*) speccas_kernels/rules.py
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "speccas: using the installed torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install -q torch; \
	else \
	  $(BIN)/python -m pip install -q "$(TORCH_CPU_SPEC)"; \
	fi
	@$(BIN)/python -c "import triton" 2>/dev/null || $(BIN)/python -m pip install -q "$(TRITON_SPEC)"
	$(BIN)/python -m pip install -q ninja setuptools wheel
	MAX_JOBS=$${MAX_JOBS:-2} $(BIN)/python -m pip install -q --no-build-isolation -e ".[hf,bench,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/speccas demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_verify.py --quick
	$(BIN)/python bench/bench_sample.py --quick

report: $(STAMP)
	$(BIN)/python bench/report.py

clean:
	rm -rf build *.egg-info speccas_kernels/_C*.so
