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

demo: $(STAMP)
	$(BIN)/mmlm tokenize demo --data $(DEMO_DATA)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build *.egg-info kernels/*.c kernels/*.so
