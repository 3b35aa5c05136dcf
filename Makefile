# One command per check.  Every target sets up its own virtualenv and builds
# the C extension, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: all install test soak faults bench bench-shard demo lint clean

all: test

$(STAMP): setup.py pyproject.toml requirements-dev.txt $(wildcard csrc/*.c csrc/*.h) ring/_build.py capture/receiver/_fastpath.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP)

# Correctness only: no timing thresholds.  Long suites: `make soak`, `make faults`.
# systemd-analyze checks the unit files and promtool the alert rules; install them
# where we can (root + apt).
test: $(STAMP)
	@command -v systemd-analyze >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get install -y -q systemd >/dev/null 2>&1; } || echo "note: systemd-analyze unavailable; unit check skipped"
	@command -v promtool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } || echo "note: promtool unavailable; alert rule check skipped"
	$(PYTEST) -q -m "not slow and not faults" --timeout=600 tests

soak: $(STAMP)
	$(PYTEST) -q -m slow --timeout=3600 tests

# The fault suite: each scenario with real processes and signals, printing its
# figures (frames refused vs recorded, shard up or not).
faults: $(STAMP)
	$(PYTEST) -q -s -m faults --timeout=1200 tests

# Benchmarks: numbers printed, never asserted.  The whole-shard run takes
# minutes; its figures, the ring's and the report: bench/results/, bench/plots/,
# bench/SHARD_RESULTS.md (QUIET=1: the run was on a quiet machine).
BENCH_RESULTS := bench/results
BENCH_ENV := CAPTURE_RING_RESULTS_JSON=$(BENCH_RESULTS)/ring.json CAPTURE_SHARD_RESULTS_JSON=$(BENCH_RESULTS)/shard.json
SHARD_REPORT := $(BIN)/python bench/shard_bench_report.py $(if $(QUIET),--quiet-machine)

bench: $(STAMP)
	mkdir -p $(BENCH_RESULTS)
	$(BENCH_ENV) $(PYTEST) -q bench --benchmark-only --benchmark-columns=min,median,mean,ops,rounds -s
	$(SHARD_REPORT)

bench-shard: $(STAMP)
	mkdir -p $(BENCH_RESULTS)
	$(BENCH_ENV) $(PYTEST) -q bench/test_shard_bench.py --benchmark-only --benchmark-columns=min,median,mean,ops,rounds -s
	$(SHARD_REPORT)

demo: $(STAMP)
	$(BIN)/python -m capture.demo

lint: $(STAMP)
	$(BIN)/python -m compileall -q common capture ring flusher tests bench
	$(BIN)/python -m pyflakes common capture ring flusher
	$(BIN)/python -m mypy --ignore-missing-imports common ring

clean:
	rm -rf $(VENV) build *.egg-info ring/_ringlib*.so capture/receiver/_fastpath*.so capture/receiver/_fastpath.c
