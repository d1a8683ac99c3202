# `make run` and `make test` set up what is missing, then do the job.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# OpenMP threads that spin while idle make torch several times slower on shared 2-core machines.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test install clean-venv viz repro

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	# torch first, from the pinned version, so pip never resolves a CUDA build on its own
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/kedro run

test: $(STAMP)
	$(PY) -m pytest

viz: $(STAMP)
	$(VENV)/bin/kedro viz run --no-browser --host 127.0.0.1 --port 4141

# the stages of `make run`; a bare `dvc repro` would also tune every family
repro: $(STAMP)
	$(VENV)/bin/dvc repro pretraining evaluation

clean-venv:
	rm -rf $(VENV)
