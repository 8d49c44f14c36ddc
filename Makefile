# The two commands: `make search` (the main job) and `make test` (the whole suite). Both use .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXPERIMENT ?= hemabench
ARGS ?=
# Test processes: the suite is mostly one-core work (Python, MLflow, process start-up), so 2 halve it on 2 cores.
# Each test file runs whole in one process (its module fixtures are built once). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: venv search test benchmark ui clean

$(BIN)/python:
	$(shell command -v $(PYTHON) || echo python3) -m venv $(VENV)

# Reinstall only when pyproject.toml changes (the stamp is newer otherwise).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

search: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . -e search --env-manager local --experiment-name $(EXPERIMENT) $(ARGS)

benchmark: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . -e benchmark --env-manager local --experiment-name $(EXPERIMENT) $(ARGS)

ui: venv
	$(BIN)/python -m bench ui --experiment $(EXPERIMENT) $(ARGS)

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

clean:
	rm -rf mlflow.db mlruns optuna.journal optuna.journal.lock .pytest_cache
