# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: demo test test-fast test-stack stack stack-down lint docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recurra demo

test: $(STAMP)
	bash .ci/ensure_browser.sh || true
	PY=$(PY) bash .ci/ensure_stack.sh || true
	$(PY) -m pytest -q -p no:cacheprovider

# The inner loop: no browser, no multi-process stack, no Dask cluster, no served deployment,
# no demo (Prefect flows still run, in its in-process ephemeral mode).
test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not browser and not integration and not slow"

# The multi-process topology of docs/deploy.md, on 127.0.0.1 (state in $$RECURRA_HOME/stack).
stack: $(STAMP)
	PY=$(PY) bash .ci/ensure_stack.sh
	$(VENV)/bin/recurra stack up

stack-down:
	$(VENV)/bin/recurra stack down

test-stack: $(STAMP)
	PY=$(PY) bash .ci/ensure_stack.sh
	$(PY) -m pytest -q -p no:cacheprovider -m integration tests/integration

# Regenerates every generated page: docs/configuration.md, cli.md, api.md (from the code),
# docs/benchmarks.md and the README's benchmark table (from benchmarks/results/*.json).
docs: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m recurra.pipelines.docgen
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/report.py

lint: $(STAMP)
	$(VENV)/bin/ruff check recurra tests benchmarks

clean:
	rm -rf .recurra .pytest_cache
