# The two commands of the README: `make run` (the service with local defaults) and `make test`.
# Both set everything up first and are fast when it is already done.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-unit format setup up down status bench lock clean

run: setup
	$(BIN)/cl run

# pytest exits 5 when it collected no test; anything else is passed on.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# The seconds-fast part: unit tests and doctests, no Kafka, MLflow or Ray started (about 2 minutes on 2 cores).
test-unit: setup
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

# Lay the code out and fix what the linter can (tests/test_style.py checks both).
format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: set PYTHON=/path/to/python3.11 (make PYTHON=...)")'
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e .
	@# transformers pulls in Hugging Face's `kernels` package, whose import name is our own kernels/;
	@# with it installed transformers imports ours and fails. It is optional at run time (docs/decisions.md).
	$(BIN)/python -m pip uninstall -y -q kernels
	@touch $@

up down status: setup
	$(BIN)/cl $@

bench: setup
	$(BIN)/cl up
	$(BIN)/python -m bench

# Refresh the pinned versions after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^cl-service' > constraints.txt

clean:
	-$(BIN)/cl down
	rm -rf $(VENV) .state
