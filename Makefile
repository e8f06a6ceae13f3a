# storyloom: `make demo` runs the whole pipeline offline, `make test` runs every check.
# Both create the environment (.venv) from the lock file first. The demo's files (the
# database, media, Prefect's home) go to storyloom's home: STORYLOOM_HOME if set, else
# ~/.local/share/storyloom, the same for every command run from any folder. The tests
# write only to temporary folders (and var/test-artifacts).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test lint typecheck unit ui bench bench-pipeline lock clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "storyloom needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/storyloom db upgrade
	$(BIN)/storyloom demo

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -n auto --dist loadgroup --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy storyloom flows tasks deployments bench

ui: $(STAMP)
	@echo "Prefect UI on http://127.0.0.1:4200 (Ctrl-C to stop)"
	PREFECT_HOME="$$($(BIN)/python -c 'from storyloom.settings import get_settings as s; print(s().home)')/prefect" \
		$(BIN)/prefect server start --host 127.0.0.1 --port 4200

bench: $(STAMP)
	$(BIN)/python -m bench

# The real topology against the fakes at fixed latencies (needs PostgreSQL, as the system
# tests do); prints one table and writes docs/performance.md. ARGS=--quick for a smoke run.
bench-pipeline: $(STAMP)
	$(BIN)/python -m bench.pipeline $(ARGS)

# Re-pin dependencies after editing pyproject.toml (needs uv: pip install uv).
lock:
	uv pip compile pyproject.toml --group dev --universal --python-version 3.11 \
		--generate-hashes --no-header --quiet -o requirements.lock

clean:
	rm -rf var .mypy_cache .pytest_cache .ruff_cache
