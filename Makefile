# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test env proto clean bench lint web

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	# torch: the CPU build named exactly, so pip never resolves a multi-GB CUDA wheel.
	$(BIN)/pip install -qq torch==2.13.0
	$(BIN)/pip install -qq -e '.[detector,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m clients.demo

# the verification page over the demo's signed captures (Ctrl-C stops; WEB=HOST:PORT to move it)
WEB ?= 127.0.0.1:8080
web: $(STAMP)
	$(BIN)/python -m clients.webdemo --listen $(WEB)

test: $(STAMP)
	$(BIN)/python -m pytest -q

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
