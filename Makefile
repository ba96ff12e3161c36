# `make demo` and `make test` set themselves up on a fresh machine with nothing but Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch where the machine provides it; override for a GPU machine: make TORCH=torch
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA ?= data/demo
DEMO_OUT  ?= runs/demo
STUDY_OUT ?= runs/cpu-study
# the demo preset's law datasets (mmlm/sweep/demo.py; tests/test_sweep_grid.py checks they agree)
DEMO_LAWS := text,molecule

.PHONY: setup demo cpu-study test test-all bench clean

$(STAMP): setup.cfg setup.py pyproject.toml kernels/*.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $(STAMP)

setup: $(STAMP)

# a preset study: demo data (built if missing) -> sweep -> laws (largest size held out) -> training phenomena
# -> digits drawn from captions, scored -> the study report (docs/demo.md). $(1): preset, $(2): out, $(3): fit options
define study
	$(BIN)/mmlm sweep --preset $(1) --data $(DEMO_DATA) --out $(2)
	$(BIN)/mmlm fit $(2)/results.csv --out $(2)/laws --holdout largest $(3)
	$(BIN)/mmlm analyze $(2) --out $(2)/analysis --laws $(2)/laws/laws.json
	$(BIN)/mmlm analyze digits --run $(2) --data $(DEMO_DATA) --out $(2)/samples
	$(BIN)/mmlm analyze study $(2) --data $(DEMO_DATA) --preset $(1)
	@echo "$(1) done: report in $(2)/$(1).md, laws in $(2)/laws/report.md, training phenomena in $(2)/analysis/, digits in $(2)/samples/"
endef

demo: $(STAMP)
	$(call study,demo,$(DEMO_OUT),--datasets $(DEMO_LAWS))

# all seven datasets, four pairs, two seeds: about 40 minutes on 2 cores (docs/demo.md)
cpu-study: $(STAMP)
	$(call study,cpu-study,$(STUDY_OUT),)

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
