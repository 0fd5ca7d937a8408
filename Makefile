# Every target installs what it needs, so each works on a fresh Debian machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel, never the multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# Naive full re-run versus KV-cached decoding, the published 103M shape with random weights.
bench: setup
	$(BIN)/python bench/generate.py --tokens 512 --batch 1
	$(BIN)/python bench/generate.py --tokens 512 --batch 16 --skip-naive

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
