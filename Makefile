# Two commands on a fresh machine with Python 3.11:
#   make bench   set up .venv, then run the main job (NCI1 size shift, ERM vs HMA)
#   make test    set up .venv, then run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python
# CPU torch first and pinned: an unpinned torch (or ogb before torch) pulls a CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup test bench quick clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/ood.py --dataset NCI1

quick: setup
	$(PY) benchmarks/ood.py --dataset NCI1 --quick

clean:
	rm -rf $(VENV) .pytest_cache
