# Two commands for a fresh machine: `make run` and `make test`. Both install everything first (the Python
# packages, and Apache Kafka's jars through Maven where Java is found).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m infra.kafka
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/papertape run

test: install
	$(BIN)/pytest -q -ra

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) papertape-data
