# The two commands: `make run` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint format bench screenshots clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) requirements.txt pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) dashboard.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_dashboard.py
	$(PY) benchmarks/bench_mixpanel.py
	$(PY) benchmarks/bench_mixpanel.py --identity

screenshots: setup
	$(PY) docs/make_screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
