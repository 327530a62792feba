# Two commands matter: `make run` (the demo on the embedded dev stack) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run dev test unit integration e2e chaos fuzz lint typecheck crds check-crds measure bench venv lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)
	@scripts/ensure-redis.sh $(BIN)

run: venv            ## the main job: the dev stack runs examples/ and exits 0 when all end as expected
	$(BIN)/anklet dev --demo

dev: venv            ## the dev stack, until Ctrl-C (kubeconfig and endpoints.json in .state/dev)
	$(BIN)/anklet dev --state-dir .state/dev

test: venv lint typecheck check-crds   ## everything CI runs
	$(BIN)/pytest -q -p no:cacheprovider

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv
	$(BIN)/pytest -q tests/integration

e2e: venv
	$(BIN)/pytest -q tests/e2e

chaos: venv          ## fault-injection scenarios + invariant checker (also part of `make test`); table in .state/
	ANKLET_CHAOS_RESULTS=.state/chaos-results.md $(BIN)/pytest -q -m chaos tests/chaos

fuzz: venv           ## the fuzz tests with 20x the examples (make test runs them CI-sized)
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -q -p no:cacheprovider -m fuzz

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

measure: venv        ## dispatch latency (kubectl apply -> first anka clone) and idle RSS on the dev stack
	$(BIN)/python scripts/measure_dispatch.py

bench: venv          ## fleet benchmark: 10 / 100 / 1,000 simulated Macs × 10 … 10,000 jobs (docs/benchmarks.md)
	$(BIN)/python scripts/bench_fleet.py

crds: venv           ## regenerate crds/ (and its copies in manifests/base/crds/) from the pydantic models
	$(BIN)/python -m anklet.crd

check-crds: venv
	$(BIN)/python -m anklet.crd --check

lock:                ## re-resolve pyproject.toml's ranges in a scratch venv and rewrite constraints.txt
	rm -rf .state/lock && $(PYTHON) -m venv .state/lock
	.state/lock/bin/python -m pip install -q --upgrade pip
	.state/lock/bin/python -m pip install -q -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; .state/lock/bin/python -m pip freeze --exclude-editable | grep -v '^anklet'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .state/lock

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
