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
# The demo's deadline in seconds: after it `make search` starts no trial and stops the running one at its next epoch
# end, so the 10-trial demo ends in about this long on any machine (drawn machines differ ~2x: 221-525 s for all 10).
# SEARCH_TIMEOUT=0: no deadline. A -P timeout=... in ARGS wins.
SEARCH_TIMEOUT ?= 240

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
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . -e search --env-manager local --experiment-name $(EXPERIMENT) \
		$(if $(findstring timeout=,$(ARGS)),,-P timeout=$(SEARCH_TIMEOUT)) $(ARGS)

benchmark: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . -e benchmark --env-manager local --experiment-name $(EXPERIMENT) $(ARGS)

ui: venv
	$(BIN)/python -m bench ui --experiment $(EXPERIMENT) $(ARGS)

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

clean:
	rm -rf mlflow.db mlruns optuna.journal optuna.journal.lock .pytest_cache
