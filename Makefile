# Quick start: `make demo`, then `make test`. Everything runs from .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOISE_VECTORS ?= tests/vectors/noise/cacophony_25519_AESGCM_SHA256.json
PYTEST_ARGS ?=

.PHONY: install test lint vectors demo bench fuzz system-deps clean fast pure check-build test-fast

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[asyncio,gevent,daemon,bench,fuzz,dev]'
	touch $(STAMP)

# Debian packages the tests drive for real (installed only when root; tests skip with a reason otherwise).
system-deps:
	bash scripts/system-deps.sh

lint: install
	$(VENV)/bin/ruff check pilot_proto pilot_daemon bindings tests bench fuzz examples
	$(VENV)/bin/mypy --strict pilot_proto
	MYPYPATH=bindings/asyncio:bindings/threads $(VENV)/bin/mypy --strict pilot_daemon bindings/asyncio/pilot_asyncio bindings/threads/pilot_threads

vectors: install
	$(PY) -m pilot_proto.noise $(NOISE_VECTORS)

test: install system-deps lint vectors check-build
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Opt-in: compile the hot core modules with mypyc (.so files beside the sources,
# gitignored; needs a C compiler and the Python headers). `make pure` removes them.
fast: install
	$(PY) scripts/build_mypyc.py

# The core, hostile-input, fuzz and binding tests against the compiled modules (left built).
test-fast: fast
	$(VENV)/bin/pytest $(PYTEST_ARGS) $(wildcard tests/test_delivery_*.py tests/test_node_*.py \
		tests/test_hostile_*.py tests/test_fuzz_*.py tests/test_bindings_*.py)

pure:
	$(PYTHON) scripts/build_mypyc.py --clean

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

clean: pure
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
