# Two commands for a fresh machine: `make run` and `make test`. Both install everything first (the Python
# packages, Apache Kafka's jars through Maven where Java is found, and Debian's chromium for the report's browser
# test, when run as root with apt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install native run test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml setup.py mypyc.ini
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m infra.kafka
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		apt-get install -y -q chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) || \
		echo "chromium could not be installed: the report's browser test will fail"
	touch $@

install: $(BIN)/.installed

# The compiled core again (setup.py), after a module it compiles changed: until then papertape/native.py runs every
# module's .py and says so, and tests/unit/test_compiled_core.py fails.
native: install
	$(BIN)/python -m pip install --quiet --no-deps -e .

run: install
	$(BIN)/papertape run

# Everything CI runs: the static checks, then every test (unit and integration, real broker and ClickHouse).
test: lint
	$(BIN)/pytest -q -ra

# The pure core and the parsers, on both cores, in seconds: no broker, no ClickHouse, no whole-tape runs.
test-fast: install
	$(BIN)/pytest -q -m "not slow" -n 2 tests/unit

# ruff (pyflakes, import order, complexity), mypy (strict on the core and the schemas), import-linter (layers point
# one way, no import cycles).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) papertape-data build
	find papertape -name '*.so' -delete
