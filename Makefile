# `make demo` and `make test` set themselves up on a fresh machine with nothing but Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch where the machine provides it; override for a GPU machine: make TORCH=torch
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA ?= data/demo
DEMO_OUT  ?= runs/demo

.PHONY: setup demo test test-all bench clean

$(STAMP): setup.cfg setup.py pyproject.toml kernels/*.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $(STAMP)

setup: $(STAMP)

# demo data (built if missing) -> sweep -> laws -> training phenomena -> samples from the largest mixed run
demo: $(STAMP)
	$(BIN)/mmlm sweep --preset demo --data $(DEMO_DATA) --out $(DEMO_OUT)
	$(BIN)/mmlm fit $(DEMO_OUT)/results.csv --out $(DEMO_OUT)/laws
	$(BIN)/mmlm analyze $(DEMO_OUT) --out $(DEMO_OUT)/analysis --laws $(DEMO_OUT)/laws/laws.json
	run=$$(ls -d $(DEMO_OUT)/runs/micro-text+image-* | awk -F- '{print $$(NF-1), $$0}' | sort -n | tail -n 1 | cut -d' ' -f2-) && \
	$(BIN)/mmlm generate $$run --out $(DEMO_OUT)/samples/image --modality image --num-samples 4 --seed 0 && \
	$(BIN)/mmlm generate $$run --out $(DEMO_OUT)/samples/text --prompt "Return the number of" --modality text --max-tokens 64 --num-samples 2 --seed 0
	@echo "demo done: laws in $(DEMO_OUT)/laws/report.md, training phenomena in $(DEMO_OUT)/analysis/, samples in $(DEMO_OUT)/samples/"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build *.egg-info kernels/*.c kernels/*.so
