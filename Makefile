# The two commands a new user types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The full pipeline on the synthetic data set, on CPU.
demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) tools/demo.py

# One pytest worker per core, at most 4 (each test's MindSpore uses several threads; much of a
# test is single-threaded start-up and graph compiling). Whole files are handed out as workers
# free up, in collection order (slow tests first, tests/conftest.py), so a module's fixtures
# are built once.
# The 20 slowest tests are listed at the end (where the suite's time goes).
# pytest's exit code 5 (no tests collected) is not a failure of the suite.
test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder --durations=20 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info
