# Quick start: `make demo`, then `make test`. Everything runs from .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOISE_VECTORS ?= tests/vectors/noise/cacophony_25519_AESGCM_SHA256.json
PYTEST_ARGS ?=

.PHONY: install core test lint vectors demo bench fuzz system-deps clean fast pure check-build \
	test-pure

# The venv, then the core compiled with mypyc where it can be (a C compiler, the Python
# headers): else pure Python, with one line saying why. `make pure` or PILOT_PURE=1
# keeps it pure; a compiled module older than a source is rebuilt, never used.
install: $(STAMP) core

core: $(STAMP)
	$(PY) scripts/build_mypyc.py --auto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[asyncio,gevent,daemon,bench,fuzz,dev]'
	touch $(STAMP)

# Debian packages the tests drive for real (installed only when root; tests skip with a reason otherwise).
system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check pilot_proto pilot_daemon bindings tests bench fuzz examples
	$(VENV)/bin/mypy --strict pilot_proto
	MYPYPATH=bindings/asyncio:bindings/threads $(VENV)/bin/mypy --strict pilot_daemon bindings/asyncio/pilot_asyncio bindings/threads/pilot_threads

vectors: $(STAMP)
	$(PY) -m pilot_proto.noise $(NOISE_VECTORS)

# Against the build `make install` made (compiled where it can be).
test: install system-deps lint vectors
	$(PY) scripts/build_mypyc.py --check
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The core, hostile-input, fuzz and binding tests on pure Python (what `pip install` and a
# machine without a C compiler run). Removes the compiled modules: `make install` or
# `make test` builds them again.
test-pure: $(STAMP)
	PILOT_PURE=1 $(PY) scripts/build_mypyc.py --auto
	$(VENV)/bin/pytest $(PYTEST_ARGS) $(wildcard tests/test_delivery_*.py tests/test_node_*.py \
		tests/test_hostile_*.py tests/test_fuzz_*.py tests/test_bindings_*.py)

# Compile now, failing loudly when it cannot (and undo `make pure`).
fast: $(STAMP)
	$(PY) scripts/build_mypyc.py

# Pure Python from now on, until `make fast`.
pure:
	$(PYTHON) scripts/build_mypyc.py --pure

# Fails when a compiled module is older than its source (it would shadow the edit).
check-build:
	$(PYTHON) scripts/build_mypyc.py --check

# The issue-5 flow for real: rendezvous + two daemons on loopback, temporary state dirs.
demo: install
	$(PY) examples/demo_flow.py

bench: install system-deps
	$(PY) -m bench

fuzz: install
	$(PY) -m fuzz --seconds $${FUZZ_SECONDS:-60}

clean:
	$(PYTHON) scripts/build_mypyc.py --clean
	rm -rf .pure $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
