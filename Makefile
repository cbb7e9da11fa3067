# make run   : fresh clone -> .venv -> dlx train on the bundled digits dataset
# make test  : same install, then the test suite without the slow end-to-end tests (SLOW=1: all; CI runs all)
# make bench : overhead, classic, generative, sequence, sweep, serving, defaults, data and distributed benchmarks -> benchmarks/results/{overhead,classic,generative,sequence,sweeps,serve,defaults,data,distributed}.md
# benchmarks/gpu.sh : the GPU checks, on a machine with NVIDIA GPUs -> benchmarks/results/gpu.md
# make bench-peers : dlx vs plain Keras vs PyTorch Lightning -> benchmarks/results/peers.md (installs torch)
# make reproduce : the book presets and tuned variants -> experiments/RESULTS.md (+ results.png)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test bench bench-peers reproduce reproduce-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/dlx train

test: $(STAMP)
	$(BIN)/pytest $(if $(SLOW),,-m "not slow")

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/classic.py
	$(BIN)/python benchmarks/generative.py
	$(BIN)/python benchmarks/sequence.py
	$(BIN)/python benchmarks/sweeps.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/defaults.py
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/distributed.py

bench-peers: $(STAMP)
	$(BIN)/pip install --quiet "torch==2.13.0" && $(BIN)/pip install --quiet -e ".[test,peers]"
	$(BIN)/python benchmarks/peers.py

reproduce: $(STAMP)
	$(BIN)/dlx report experiments

reproduce-quick: $(STAMP)
	$(BIN)/dlx report experiments --quick

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
