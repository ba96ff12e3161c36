# `make demo` and `make test` set themselves up on a fresh machine with nothing but Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch where the machine provides it; override for a GPU machine: make TORCH=torch
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA ?= data/demo
DEMO_OUT  ?= runs/demo
# the demo preset's law datasets (mmlm/sweep/demo.py; tests/test_sweep_grid.py checks they agree)
DEMO_LAWS := text,molecule

.PHONY: setup demo test test-all bench clean

$(STAMP): setup.cfg setup.py pyproject.toml kernels/*.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $(STAMP)

setup: $(STAMP)

# demo data (built if missing) -> sweep -> laws (largest size held out) -> training phenomena -> digits drawn
# from captions, scored -> the study report (docs/demo.md)
demo: $(STAMP)
	$(BIN)/mmlm sweep --preset demo --data $(DEMO_DATA) --out $(DEMO_OUT)
	$(BIN)/mmlm fit $(DEMO_OUT)/results.csv --out $(DEMO_OUT)/laws --holdout largest --datasets $(DEMO_LAWS)
	$(BIN)/mmlm analyze $(DEMO_OUT) --out $(DEMO_OUT)/analysis --laws $(DEMO_OUT)/laws/laws.json
	$(BIN)/mmlm analyze digits --run $(DEMO_OUT) --data $(DEMO_DATA) --out $(DEMO_OUT)/samples
	$(BIN)/mmlm analyze study $(DEMO_OUT) --data $(DEMO_DATA) --preset demo
	@echo "demo done: report in $(DEMO_OUT)/demo.md, laws in $(DEMO_OUT)/laws/report.md, training phenomena in $(DEMO_OUT)/analysis/, digits in $(DEMO_OUT)/samples/"

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
