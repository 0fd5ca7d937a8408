# Every target installs what it needs, so each works on a fresh Debian machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := python3-venv gcc fluidsynth fluid-soundfont-gm ffmpeg postgresql redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps demo test lint locales bench clean

setup: system-deps $(VENV)/.installed

# Skipped when everything is already there, so `make setup` is quick the second time.
system-deps:
	@if command -v gcc >/dev/null && command -v fluidsynth >/dev/null && command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null \
	    && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    && command -v redis-server >/dev/null && $(PYTHON) -c "import ensurepip, venv" 2>/dev/null; then :; else \
	  echo "installing $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned to 2.13.0: on this project's machines pip finds the CPU wheel in
	# /opt/wheels (pip.conf find-links); elsewhere add --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/melomania build-kernel || true  # optional: without it decoding keeps an fp32 cache
	touch $@

demo: setup
	$(BIN)/melomania compose ambient --seconds 30 --seed 42 --out out

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The bot's texts (bot/i18n.py says how to add one): every marked string into the template, merged
# into each language's catalogue; then translate what is new or fuzzy in its .po. Nothing to
# compile: the bot compiles the .po when it starts. Sorted and without line numbers, so that moving
# code does not churn the catalogues.
LOCALES := bot/locales
locales: setup
	$(BIN)/pybabel extract -F babel.cfg --no-location --sort-output --project Melomania -o $(LOCALES)/melomania.pot bot
	$(BIN)/pybabel update -D melomania -i $(LOCALES)/melomania.pot -d $(LOCALES) --ignore-obsolete

# Naive full re-run vs KV-cached decoding (published 103M shape, random weights); rendering speed.
bench: setup
	$(BIN)/python bench/generate.py --tokens 512 --batch 1
	$(BIN)/python bench/generate.py --tokens 512 --batch 16 --skip-naive
	$(BIN)/python bench/render.py
	$(BIN)/python bench/step.py --batches 1,8
	$(BIN)/python bench/precision.py --batches 1,8
	$(BIN)/python bench/load.py --users 8

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
