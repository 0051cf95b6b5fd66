# The two commands: `make serve` and `make test`. Everything else is a helper for them.
.PHONY: serve test setup setup-dev lint bench

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev

serve: setup
	.venv/bin/superscale serve $(ARGS)

test: setup-dev
	scripts/test.sh

lint: setup-dev
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy

bench: setup-dev
	.venv/bin/python benchmarks/engine.py
