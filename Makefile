# Two commands matter: `make run` (the offline default experiment) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-all lint bench bench-paper clean

install: $(STAMP)

# Re-install only when the packaging metadata changes; the install is editable.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

run: install
	$(PY) -m mucs_pipeline $(ARGS)

# The contributor's check before each commit: every module, under 10 minutes on 2 cores.
test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Every test: the above plus the paper-scale smoke tests and slow end-to-end runs (CI).
test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Scoring-engine, per-method and LDS subset-model timings: writes docs/benchmarks.md and .json.
bench: install
	$(PY) scripts/bench.py $(ARGS)

# Paper-scale minutes per item from measured DiT/B op timings, checked on the tiny model.
bench-paper: install
	$(PY) scripts/bench_paper.py $(ARGS)
	$(PY) scripts/bench_paper.py --unet

lint: install
	$(VENV)/bin/ruff check mucs_pipeline tests scripts
	$(VENV)/bin/ruff format --check mucs_pipeline tests scripts

clean:
	rm -rf $(VENV) runs outputs .pytest_cache
