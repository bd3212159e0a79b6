# Every target sets up its own virtualenv from the pinned constraints, so each works on
# a machine that has nothing but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export RAY_USAGE_STATS_ENABLED := 0
export AWS_EC2_METADATA_DISABLED := true

.PHONY: setup demo test bench bench-all bench-gpu gpu-wheels

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[dev,bench]'
	# Byte-compile on every core (pip does it on one), and explicitly: where
	# PYTHONDONTWRITEBYTECODE is set, every Ray worker would otherwise compile torch from
	# source at each start. A file that does not compile (templates, py2 fixtures in
	# some packages) is only a missed speed-up.
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m compileall -q -j 0 coder compressor_model pipeline cache > /dev/null
	$(VENV)/bin/proxycomp demo

test: $(STAMP)
	# The project's own sources too, for the same reason (each Ray worker imports them).
	$(PY) -m compileall -q -j 0 coder compressor_model pipeline cache tests > /dev/null
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m coder.bench --json

bench-all: bench
	$(PY) -m compressor_model.bench --json --roundtrip-files 1000
	$(PY) -m pipeline.bench --json

# On a GPU machine (no virtualenv: its python3 has CUDA torch; wheels for the rest come
# from .whl/, made by `make gpu-wheels` where PyPI is reachable). One JSON object out.
bench-gpu:
	bash deploy/bench-gpu.sh $(ARGS)

gpu-wheels:
	bash deploy/gpu-wheels.sh
