# tcbridge: `make run` starts the demo, `make test` runs the whole suite.
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/twistd -n tcbridge --demo

test: $(STAMP)
	$(BIN)/ruff check tcbridge tests twisted bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check tcbridge tests twisted bench
	$(BIN)/ruff format --check tcbridge tests twisted bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_sync.py --count 1000000 --runs 3 --growth
	$(BIN)/python bench/bench_daemon.py --count 1000000
	$(BIN)/python bench/bench_delta.py --count 1000000 --churn 0.005 --runs 3
	$(BIN)/python bench/bench_minutely.py --count 1000000 --cycles 10
	$(BIN)/python bench/bench_compaction.py --count 1000000 --runs 3

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
