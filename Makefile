# pgchat — every target sets itself up (a .venv with the package installed) on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-embedded test-debian lint bench schema clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job on the embedded default: start it, migrate it, replay the story side by side.
demo: $(STAMP)
	$(BIN)/pgchat demo

## The whole suite against throwaway servers: embedded PostgreSQL 18, then every Debian
## PostgreSQL installed under /usr/lib/postgresql (15 on this machine), when there is one.
test: $(STAMP) test-embedded test-debian

test-embedded: $(STAMP)
	$(BIN)/python -m pytest -q

test-debian: $(STAMP)
	@found=0; for bin in /usr/lib/postgresql/*/bin; do \
	  [ -x "$$bin/postgres" ] || continue; found=1; \
	  echo "== PostgreSQL from $$bin =="; \
	  PGCHAT_TEST_PG_BIN="$$bin" $(BIN)/python -m pytest -q || exit 1; \
	done; \
	[ $$found = 1 ] || echo "no Debian PostgreSQL under /usr/lib/postgresql: ran on the embedded server only"

lint: $(STAMP)
	$(BIN)/ruff check pgchat tests
	$(BIN)/mypy pgchat

bench: $(STAMP)
	$(BIN)/pgchat bench

## sql/schema.sql from the migrations (a throwaway embedded PostgreSQL 18); rerun after
## changing a migration: the suite fails while the file and the migrations disagree.
schema: $(STAMP)
	$(BIN)/python -m pgchat.schema

clean:
	rm -rf $(VENV) .pgchat .pytest_cache .mypy_cache .ruff_cache
