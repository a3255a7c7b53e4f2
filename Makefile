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

## squawk on the forward migrations: yoyo runs each in a transaction, except those declaring
## `-- transactional: false` (linted as they run). Rules left out, and why:
## require-lock-timeout / require-statement-timeout: `pgchat migrate` sets lock_timeout for every
##   migration (--lock-timeout) and no statement_timeout on purpose (a CONCURRENTLY build must finish);
## prefer-bigint-over-int: the app's counters are integer columns (widening one rewrites its table);
##   pgchat bounds what goes into them instead (0003 within_integer, 0005's CHECKs).
FORWARD        := $(filter-out %.rollback.sql,$(wildcard migrations/*.sql))
NON_TX         := $(shell grep -l '^-- transactional: false' $(FORWARD))
SQUAWK         := $(BIN)/squawk --pg-version=15.0 \
                  --exclude=require-lock-timeout,require-statement-timeout,prefer-bigint-over-int

lint: $(STAMP)
	$(BIN)/ruff check pgchat pgchat_dev tests
	$(BIN)/mypy pgchat pgchat_dev
	$(SQUAWK) --assume-in-transaction $(filter-out $(NON_TX),$(FORWARD))
	$(SQUAWK) $(NON_TX)

bench: $(STAMP)
	$(BIN)/pgchat bench

## sql/schema.sql from the migrations (a throwaway embedded PostgreSQL 18); rerun after
## changing a migration: the suite fails while the file and the migrations disagree.
schema: $(STAMP)
	$(BIN)/python -m pgchat_dev.schema

clean:
	rm -rf $(VENV) .pgchat .pytest_cache .mypy_cache .ruff_cache
