# The two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,postgres,docker]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestra validate specs/
	$(BIN)/orchestra plan specs/
	$(BIN)/orchestra apply specs/
	$(BIN)/orchestra get deployments
	@echo "Starting the daemon on specs/: web UI on http://127.0.0.1:4200/, API under /api/v1 (Ctrl-C stops it)."
	@echo "In another shell: . .venv/bin/activate; orchestra get runs"
	$(BIN)/orchestra daemon specs/

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_plan.py
	$(BIN)/python bench/bench_daemon.py
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_ui.py
	$(BIN)/python bench/bench_docker.py

clean:
	rm -rf $(VENV) .orchestra
