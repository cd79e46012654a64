# erpsync: one Makefile that means the same locally and in CI.
#   make demo       set everything up, start the sandbox and Airflow with its UI (Ctrl-C stops all)
#   make demo-once  the same without the UI: run the main chain once, print a summary
#   make test       lock check, lint, format check, type check and the whole test suite
#   make bench      the benchmarks (results under benchmarks/results/)
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif
VENV := .venv
RUN := $(VENV)/bin

.PHONY: install browser demo demo-once screenshots test lint typecheck format lock-check bench sandbox up celery-run clean help

help:
	@sed -n '2,6p' Makefile

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# The project venv, exactly as locked (fails if uv.lock does not match pyproject.toml).
install: $(UV)
	$(UV) sync --locked --all-extras --python $(PYTHON)

# The browser the console's browser tests drive: Debian's chromium (Playwright, pinned in the dev
# group to the release whose bundled Chromium is closest to Debian's, is pointed at it; never
# `playwright install`, which downloads browsers) and a font so screenshots render text.
# Quick when both are present; installing them needs root (apt-get).
BROWSER_PACKAGES := chromium fonts-dejavu-core
browser:
	@if command -v chromium >/dev/null && dpkg -s fonts-dejavu-core >/dev/null 2>&1; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(BROWSER_PACKAGES) with apt-get (the browser tests drive Debian's chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); \
	else \
		echo "make browser: the browser tests need Debian's chromium and a font; as root run:" >&2; \
		echo "  apt-get update && apt-get install -y --no-install-recommends $(BROWSER_PACKAGES)" >&2; \
		echo "(or run make as root / with password-less sudo), then run make again" >&2; \
		exit 1; \
	fi

lock-check: $(UV)
	$(UV) lock --check

lint: install
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .

# mypy on include/erpsync: strict, except the modules pyproject.toml's [tool.mypy] lists.
# Incremental (.mypy_cache): a fresh clone's first run takes ~20 s of CPU, later runs ~2 s.
typecheck: install
	$(RUN)/mypy

format: install
	$(RUN)/ruff format .
	$(RUN)/ruff check --fix .

# The database is started (and sized) once before pytest spreads the suite over both cores.
test: lock-check lint typecheck browser
	$(RUN)/erpsync db start
	$(RUN)/pytest -n 2 --dist loadfile --durations=15

# The README's screenshots, taken by the browser tests of the finance console.
screenshots: install browser
	$(RUN)/erpsync db start
	ERPSYNC_SCREENSHOTS=$(CURDIR)/docs/screenshots $(RUN)/pytest tests/browser/test_console_browser.py -q

demo: install
	$(RUN)/erpsync demo

demo-once: install
	$(RUN)/erpsync demo --once

sandbox: install
	$(RUN)/erpsync sandbox serve

# The distributed deployment (needs a Docker engine) and its proof on this machine (no engine).
up:
	docker compose --profile sandbox up -d --build

celery-run: install
	$(RUN)/erpsync deploy celery-run

# Benchmarks report ratios and rates measured in the same run; results in benchmarks/results/.
# Each step writes its JSON; a step that misses its target exits 1 and make goes on to the next.
bench: install
	$(RUN)/python benchmarks/sandbox_serving.py large --reuse
	-$(RUN)/erpsync bench
	-$(RUN)/python -m erpsync.bench.reconcile
	-$(RUN)/python -m erpsync.bench.invoicing
	-$(RUN)/python -m erpsync.bench.console
	-$(RUN)/python -m erpsync.bench.exceptions
	-$(RUN)/python -m erpsync.bench.cash
	-$(RUN)/python -m erpsync.bench.month_end --size large

clean:
	-$(RUN)/erpsync db stop
	rm -rf .erpsync .airflow
