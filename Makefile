# Set up:  make install   (virtual environment in .venv; `pip install -e .` into any environment also works)
# Test:    make test
# Demo:    make demo
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hearfuse-installed

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# Reference implementation for the CREPE tests; --no-deps because its metadata requires torchaudio.
	$(BIN)/python -m pip install --quiet --no-deps torchcrepe==0.0.24
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python examples/quickstart.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
