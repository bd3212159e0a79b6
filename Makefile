# Every target sets up its own virtualenv from the pinned constraints, so each works on
# a machine that has nothing but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED := 0
export AWS_EC2_METADATA_DISABLED := true
# Bytecode is written as modules are first imported (pip's --no-compile below skips
# compiling all of torch and Ray up front). Where PYTHONDONTWRITEBYTECODE is set, every
# Ray worker would compile torch from source at each start: tests ran twice as long.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test bench bench-all bench-gpu gpu-wheels

$(STAMP): pyproject.toml trainer/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[dev,bench,analysis]' -e ./trainer
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/proxycomp demo

# Two test processes, each file in one of them (a module's Ray cluster and fixtures stay
# in one process; the trainer's files, collected first, run before any in-process Ray).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m benchmarks.coder --json

bench-all: bench
	$(PY) -m benchmarks.engine --json --roundtrip-files 1000
	$(PY) -m benchmarks.job --json

# On a GPU machine (no virtualenv: its python3 has CUDA torch; wheels for the rest come
# from .whl/, made by `make gpu-wheels` where PyPI is reachable). One JSON per step in
# --out as each step ends (deploy/README.md: the two commands that fit a borrowed GPU).
bench-gpu:
	bash deploy/bench-gpu.sh $(ARGS)

gpu-wheels:
	bash deploy/gpu-wheels.sh
