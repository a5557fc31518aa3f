# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make demo   -- install what is missing, then run the embedded default end to end
#   make test   -- install what is missing (plus test tools), then run the test suite
# Both are idempotent; Horovod is built once and its wheel cached in ~/.cache/mcnn-explorer.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-test demo test lint clean
setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --with-test-deps

demo: setup
	$(VENV)/bin/mcnn-explore demo

test: setup-test
	$(PY) -m ruff check .
	$(PY) -m mypy explorer launchers search_spaces dashboards
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup-test
	$(PY) -m ruff check .
	$(PY) -m mypy explorer launchers search_spaces dashboards

clean:
	rm -rf demo runs .pytest_cache .mypy_cache .ruff_cache
