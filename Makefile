# The two commands: `make demo` and `make test` (both create .venv when missing).
VENV ?= .venv
PY := $(VENV)/bin/python
HEIMDALL := $(VENV)/bin/heimdall
DEMO ?= demo-out
COV_MIN ?= 85

.PHONY: install demo test test-fast lint format bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	bash scripts/demo.sh $(DEMO)

test: install lint
	$(PY) -m pytest --cov=heimdall --cov-report=term:skip-covered --cov-fail-under=$(COV_MIN) -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -m "not slow" -x -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(DEMO) mlruns.db mlruns mlartifacts .pytest_cache .coverage
