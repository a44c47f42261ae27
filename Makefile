# Two entry points: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint typecheck browser pytest pytest-sqlite pytest-postgres bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install it, or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned, so nothing else can pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/switchboard demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: pytest-sqlite pytest-postgres

# The survey page is tested in a real headless Chromium: Debian's chromium and chromium-driver,
# installed here when missing (as root), else the one browser test is skipped and says why.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES) || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES); }; \
	else \
		echo "No chromium: the survey page's browser test will be skipped (sudo apt-get install $(BROWSER_PACKAGES))"; \
	fi

pytest-sqlite: $(STAMP) browser
	SWITCHBOARD_TEST_DB=sqlite $(BIN)/pytest -q

# Runs only when a PostgreSQL server answers on 127.0.0.1:5432 (or TEST_POSTGRES_URL).
pytest-postgres: $(STAMP) browser
	@if $(BIN)/python -m tests.postgres_reachable; then \
		SWITCHBOARD_TEST_DB=postgres $(BIN)/pytest -q; \
	else \
		echo "PostgreSQL not reachable: skipped the PostgreSQL run"; \
	fi

bench: $(STAMP)
	$(BIN)/python -m bench.intake
	$(BIN)/python -m bench.webhook
	$(BIN)/python -m bench.triage
	$(BIN)/python -m bench.chaos
	$(BIN)/python -m bench.history

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var
