# The two quick-start commands. Both create .venv with the CPU stack first (scripts/setup.sh is a no-op when done).
.PHONY: quickstart test lint setup

setup:
	bash scripts/setup.sh

quickstart: setup
	bash scripts/quickstart.sh

test: setup
	.venv/bin/python -m pytest -q --timeout=900 --durations=30 tests

lint: setup
	.venv/bin/ruff check posttrain envs tests bench scripts examples
