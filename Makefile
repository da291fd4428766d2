# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
.PHONY: demo test venv up down lock lint

venv:
	@bash scripts/venv.sh

# Installs (cached venv), starts the local stack, and runs the demo.
demo: venv
	@bash scripts/demo.sh $(ARGS)

# Runs the whole test suite against real services (Kafka, MLflow, SQLite + PostgreSQL).
test: venv
	@bash scripts/test.sh

up: venv
	@.venv/bin/fleet up

down:
	@.venv/bin/fleet down

lint: venv
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

# Re-resolve requirements.lock from pyproject.toml (needs the uv that scripts/venv.sh installs).
lock:
	@$${XDG_CACHE_HOME:-$$HOME/.cache}/fleet/uv-0.13.8/bin/uv pip compile pyproject.toml --extra server --extra dev \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o requirements.lock
