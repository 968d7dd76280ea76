# The whole set-up: `make demo` and `make test`. Both create .venv/ on first use.
PYTHON ?= python3
VENV ?= .venv
PIP_CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(PIP_CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(PIP_CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(PIP_CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(PIP_CONSTRAINTS) -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/evalbench run

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
