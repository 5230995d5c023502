# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test env proto clean bench lint fuzz mutants web

env: $(STAMP)

# The venv is built from the requirements, constraints.txt holding every package at the
# version the tests passed with. Its stamp holds their SHA-256: the venv is built again when
# they change in content, not when they are only newer on disk (a git worktree's checkout
# is newer than the venv its .venv links to, which was built for the same files).
REQS := pyproject.toml constraints.txt
REQS_SHA := $(shell cat $(REQS) | $(PY) -c "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())" 2>/dev/null)
STAMP_SHA := $(shell cat $(STAMP) 2>/dev/null)

$(STAMP): $(if $(REQS_SHA),$(if $(filter $(REQS_SHA),$(STAMP_SHA)),,FORCE),FORCE)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	# torch: the CPU build named exactly, so pip never resolves a multi-GB CUDA wheel.
	$(BIN)/pip install -qq -c constraints.txt torch==2.13.0
	$(BIN)/pip install -qq -c constraints.txt -e '.[detector,dev]'
	echo $(REQS_SHA) > $(STAMP)

.PHONY: FORCE
FORCE:

demo: $(STAMP)
	$(BIN)/python -m clients.demo

# the verification page over the demo's signed captures (Ctrl-C stops; WEB=HOST:PORT to move
# it); its gRPC service on GRPC, prov's default server address, the same on every run
WEB ?= 127.0.0.1:8080
GRPC ?= 127.0.0.1:50051
web: $(STAMP)
	$(BIN)/python -m clients.webdemo --listen '$(WEB)' --listen-set-by WEB \
	  --grpc-listen '$(GRPC)' --grpc-listen-set-by GRPC

# the tests in TEST_WORKERS processes (pytest-xdist; TEST_WORKERS=0 runs them in this one)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

# every bench, short and nice'd (3-5 minutes in the last runs here; the first run also
# builds a 10^6-entry log once, cached in out/biglog/), then one table of same-run ratios
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	# formatting too (ruff also formats the Python blocks of docs/*.md)
	$(BIN)/ruff format --check .
	# strict typing of the product, scripts/, bench/ and tests/; configured in pyproject.toml [tool.mypy]
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info

# Fuzz every parser of untrusted bytes (tests/fuzz/) for FUZZ_SECONDS each (7 targets),
# FUZZ_JOBS targets at once (one core each: the same executions per target, less wall time).
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS)

# Mutation testing of the trusted core (mutmut); writes docs/mutants.md.
mutants: $(STAMP)
	$(BIN)/python scripts/mutants.py $(MUTANTS_ARGS)
