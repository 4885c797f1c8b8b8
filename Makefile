# Set up:  make install   (virtual environment in .venv; `pip install -e .` into any environment also works)
# Test:    make test
# Demo:    make demo
# Docs:    make docs   (docs/_build/html/index.html)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hearfuse-installed

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO ?= demo
# What the demo evaluates, and with which downstream probe: CREPE tiny (weights installed with the package)
# and the linear probe, a few minutes on 2 cores. The HEAR kit's protocol on the paper's CREPE preset is
# `make demo MODELS=crepe PROBE=mlp` (about 25 minutes); every preset whose weights are here:
# `make demo MODELS="$(.venv/bin/hearfuse models --available)"`.
MODELS ?= examples/crepe_tiny.toml
REAL_MODELS ?= examples/whisper_crepe_ge2e_wakeword.toml
PROBE ?= linear

.PHONY: install system-deps test test-no-bf16 docs demo clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The package states version ranges; constraints.txt holds the exact versions tested.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	# The CREPE tests' reference implementation, X-ARES's encoder check and HEAR's validator; --no-deps
	# because their metadata requires torchaudio or TensorFlow (no module the tests import uses them).
	$(BIN)/python -m pip install --quiet --no-deps torchcrepe==0.0.24 xares==0.1.3 hearvalidator==2021.0.2
	# Weights of two real models (GE2E, Basic Pitch); --no-deps because their metadata pulls librosa,
	# webrtcvad and TensorFlow: hearfuse reads their weights files and imports none of their code.
	$(BIN)/python -m pip install --quiet --no-deps resemblyzer==0.1.4 basic-pitch==0.4.0
	touch $(STAMP)

# Debian programs the synthetic suite renders with (fluidsynth + FluidR3 GM SoundFont, espeak-ng, sox), the
# browser the documentation's test reads the built site in (chromium), and the packages whose recordings the
# recorded suite reads; apt-get runs only when something is missing.
RECORDED_PACKAGES := tuxpaint-stamps-default ktuberling-data klettres-data hydrogen-drumkits
system-deps:
	@if ! command -v fluidsynth >/dev/null || ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null \
	    || ! command -v chromium >/dev/null || [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends \
	    fluidsynth fluid-soundfont-gm espeak-ng sox chromium; fi
	@missing=$$(for package in $(RECORDED_PACKAGES); do \
	    dpkg-query -W -f='$${db:Status-Status}' $$package 2>/dev/null | grep -qx installed || echo $$package; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $$missing; fi

# The tests build the documentation too (tests/test_docs.py, into docs/_build/html) and read it in Chromium.
test: install system-deps
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/python -m pytest -q

# The documentation, every warning an error (a broken reference or link, a page in no table of contents).
docs: install
	$(BIN)/python -m sphinx -W --keep-going -E -b html -d docs/_build/doctrees docs docs/_build/html

# The suite as a CPU without native bfloat16 runs it: oneDNN limited to AVX2 emulates bf16 (tens of
# times slower than float32), which no test may turn into minutes.
test-no-bf16:
	ONEDNN_MAX_CPU_ISA=AVX2 $(MAKE) test

# Build the ci size of both suites (synthetic and recorded), evaluate MODELS with PROBE on all of them and
# REAL_MODELS (a fusion of four real networks whose weights packages ship) on the recorded tasks, and print
# the report of both, which says which tasks are recorded and which synthetic.
demo: install system-deps
	$(BIN)/hearfuse tasks build --out $(DEMO)/tasks --size ci --suite synthetic
	$(BIN)/hearfuse tasks build --out $(DEMO)/recorded --size ci --suite recorded
	$(BIN)/hearfuse evaluate $(foreach model,$(MODELS),--model $(model)) \
	  --tasks $(DEMO)/tasks --results $(DEMO)/results --probe $(PROBE) > /dev/null
	$(BIN)/hearfuse evaluate $(foreach model,$(sort $(MODELS) $(REAL_MODELS)),--model $(model)) \
	  --tasks $(DEMO)/recorded --results $(DEMO)/results --probe $(PROBE)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache $(DEMO) docs/_build
