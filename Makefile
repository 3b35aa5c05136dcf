# One command per check.  Every target sets up its own virtualenv and builds
# the C extension, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: all install test soak bench demo lint clean

all: test

$(STAMP): setup.py pyproject.toml requirements-dev.txt $(wildcard csrc/*.c csrc/*.h) ring/_build.py capture/receiver/_fastpath.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP)

# Correctness only: no timing thresholds.  Long soak/fault suites: `make soak`.
# systemd-analyze checks the unit files and promtool the alert rules; install them
# where we can (root + apt).
test: $(STAMP)
	@command -v systemd-analyze >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get install -y -q systemd >/dev/null 2>&1; } || echo "note: systemd-analyze unavailable; unit check skipped"
	@command -v promtool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } || echo "note: promtool unavailable; alert rule check skipped"
	$(PYTEST) -q -m "not slow" --timeout=600 tests

soak: $(STAMP)
	$(PYTEST) -q -m slow --timeout=3600 tests

bench: $(STAMP)
	$(PYTEST) -q bench --benchmark-only --benchmark-columns=min,median,mean,ops,rounds -s

demo: $(STAMP)
	$(BIN)/python -m capture.demo

lint: $(STAMP)
	$(BIN)/python -m compileall -q common capture ring flusher tests bench
	$(BIN)/python -m pyflakes common capture ring flusher
	$(BIN)/python -m mypy --ignore-missing-imports common ring

clean:
	rm -rf $(VENV) build *.egg-info ring/_ringlib*.so capture/receiver/_fastpath*.so capture/receiver/_fastpath.c
