# NovaEvo AIOps — the two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= data/sample
HOST   ?= 127.0.0.1
PORT   ?= 8000

export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false

.PHONY: install run test lint bench clean help

help:
	@echo "make run    set up .venv, generate sample data if missing, train, serve on $(HOST):$(PORT)"
	@echo "make test   set up .venv and run the whole test suite"
	@echo "make lint   ruff and the import contracts"
	@echo "make clean  remove the venv, sample data and the local MLflow store"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@if [ ! -d "$(DATA)" ]; then \
		echo "generating a sample fleet in $(DATA)"; \
		$(BIN)/aiops data synth --out $(DATA); \
	fi
	$(BIN)/aiops train --data $(DATA)
	@$(BIN)/aiops data sample-request --data $(DATA) --out data/sample-request.json --spike
	$(BIN)/aiops serve --host $(HOST) --port $(PORT) --sample-request data/sample-request.json

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) data mlruns/mlflow.db mlruns/artifacts mlruns/serving-cache

# Benchmarks (measure and print; not tests). Results go to benchmarks/results/.
NAB ?=
.PHONY: bench-nab bench-fleet bench-speed bench-forecast bench-scaling

bench-nab: $(STAMP)
	@if [ -z "$(NAB)" ]; then \
		echo "bench-nab needs the NAB folder: make bench-nab NAB=../shared/data/nab" >&2; exit 2; \
	fi
	@if [ ! -f "$(NAB)/combined_windows.json" ] || [ ! -d "$(NAB)/data" ]; then \
		echo "NAB=$(NAB) holds no data/ folder and combined_windows.json; point it at the NAB subset" >&2; \
		exit 2; \
	fi
	$(BIN)/python benchmarks/nab.py --nab "$(NAB)"

bench-fleet: $(STAMP)
	$(BIN)/python benchmarks/fleet_events.py --detectors combined,static_threshold,dynamic_threshold,correlation

NAB_ARG = $(if $(NAB),--nab "$(NAB)",)

bench-speed: $(STAMP)
	$(BIN)/python benchmarks/score_speed.py $(NAB_ARG)

bench-forecast: $(STAMP)
	$(BIN)/python benchmarks/forecast.py --lstm $(NAB_ARG)

bench-scaling: $(STAMP)
	$(BIN)/python benchmarks/scaling.py $(NAB_ARG)

bench: $(STAMP)
	@if [ -n "$(NAB)" ]; then \
		$(MAKE) --no-print-directory bench-nab NAB="$(NAB)"; \
	else \
		echo "NAB is unset: skipping bench-nab (make bench NAB=../shared/data/nab runs it)"; \
	fi
	@$(MAKE) --no-print-directory bench-fleet
	@$(MAKE) --no-print-directory bench-speed NAB="$(NAB)"
	@$(MAKE) --no-print-directory bench-forecast NAB="$(NAB)"
	@$(MAKE) --no-print-directory bench-scaling NAB="$(NAB)"
