# Buddies: `make run` sets everything up and runs the product; `make test` installs what is missing and tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DATA ?=
PYTEST_ARGS ?=
# `make run` is one machine's development stack: it names its settings (there is no default settings module).
SETTINGS ?= recsys_site.settings.local

.PHONY: install browser run test lint bench bench-scale clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# The CPU build of torch 2.13.0 lies on disk; installing it first keeps pip from fetching a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	DJANGO_SETTINGS_MODULE=$(SETTINGS) $(PY) -m recsys_site.stack run $(if $(DATA),--data $(DATA))

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The dashboard's browser test drives Debian's Chromium (a test tool's own browser download cannot work here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the dashboard's browser test"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/train.py
	$(PY) bench/pairing.py
	$(PY) bench/search.py
	$(PY) bench/api.py

# issue 13's scale run (long: see docs/SCALING.md); SIZES="25000 50000 100000 200000" for the full series
SIZES ?= 6250 12500 25000
bench-scale: install
	$(PY) bench/scale.py --sizes $(SIZES)

clean:
	rm -rf var/run var/mongo var/demo
