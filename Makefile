# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make demo   -- install what is missing, then run the embedded default end to end
#   make test   -- install what is missing (plus test tools), then run the test suite
# Both are idempotent; Horovod is built once and its wheel cached in ~/.cache/mcnn-explorer.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-test demo test lint bench bench-quick clean
setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --with-test-deps

demo: setup
	$(VENV)/bin/mcnn-explore demo

test: setup-test
	$(PY) -m ruff check .
	$(PY) -m mypy explorer launchers search_spaces dashboards bench mcnn_base devsupport tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Benchmarks (not tests): BENCHMARKS.md records the full runs; CI runs the --quick smoke modes.
BENCH_WORK ?= bench-work
bench: setup
	$(PY) -m bench.throughput --workdir $(BENCH_WORK)
	$(PY) -m bench.fullsize --workdir $(BENCH_WORK)
	$(PY) -m bench.overhead --workdir $(BENCH_WORK)
	$(PY) -m bench.layout --workdir $(BENCH_WORK)
	$(PY) -m bench.bf16 --workdir $(BENCH_WORK)
	$(PY) -m bench.search --workdir $(BENCH_WORK)
	$(PY) -m bench.table --workdir $(BENCH_WORK)
	$(PY) -m bench.signal
	$(PY) -m bench.replay --workdir $(BENCH_WORK)
	$(PY) -m bench.calibrate --workload bench-v2  # the rehearsal's calibration (BENCHMARKS §6)
	$(PY) -m bench.rehearsal_points --workdir $(BENCH_WORK)
	$(PY) -m bench.rehearsal_check
	$(PY) -m bench.memory --workdir $(BENCH_WORK)
	$(PY) -m bench.onednn --precision float32
	$(PY) -m bench.onednn --precision mixed_bfloat16

bench-quick: setup
	$(PY) -m bench.throughput --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.fullsize --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.overhead --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.layout --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.bf16 --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.search --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.table --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.signal --quick
	$(PY) -m bench.pilot_warmup --read  # reads the committed pilot records (any class's)
	$(PY) -m bench.replay --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.calibrate --quick
	$(PY) -m bench.rehearsal_points --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.rehearsal_check --quick
	$(PY) -m bench.memory --quick --workdir $(BENCH_WORK)
	$(PY) -m bench.onednn --quick

lint: setup-test
	$(PY) -m ruff check .
	$(PY) -m mypy explorer launchers search_spaces dashboards bench mcnn_base devsupport tests

clean:
	rm -rf demo runs bench-work .pytest_cache .mypy_cache .ruff_cache
