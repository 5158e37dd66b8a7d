# obliviate: `make run` (default benchmark, prints a leaderboard) and `make test` (the whole suite).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ARGS    ?=

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[ray,tune,dev]'
	bash scripts/install-system.sh
	touch $(STAMP)

run: install   # default: every registered method on digits; ARGS replaces that, e.g. ARGS="--preset smoke"
	$(BIN)/obliviate run $(if $(ARGS),$(ARGS),--method all)

test: install   # two test processes, one file each at a time (files share their fixtures): 0.6-0.7x the serial wall
	$(BIN)/python -m pytest -x -n 2 --dist loadfile --timeout=600 tests

bench: install
	$(BIN)/python benchmarks/metric.py --quick
	$(BIN)/python benchmarks/population_training.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
