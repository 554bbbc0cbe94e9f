# remflow: `make run` and `make test` each set up .venv from nothing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.remflow-installed
CORES ?= all

.PHONY: run test bench lint report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The workflow on the bundled default data, then the self-contained HTML report.
run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores 1 --report results/report.html
	@echo "results in results/, report in results/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# Benchmarks print JSON lines; tk_r_em's own loader needs Keras 2 (tf_keras) on current TensorFlow.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet 'tf_keras>=2.21'
	TF_USE_LEGACY_KERAS=1 $(BIN)/python tests/benchmarks/run.py

# Catalog conventions: snakefmt style (settings in pyproject.toml) and Snakemake's own lints.
lint: $(STAMP)
	$(BIN)/snakefmt --check workflow/Snakefile workflow/rules/
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake
