# mtrank — two commands from a fresh clone:  `make train`  and  `make test`.
#
# The virtual environment lives in .venv. torch is installed first, from TORCH_SPEC, so that the
# project's `torch>=2.3` requirement never pulls a build you did not choose:
#   - default `torch==2.13.0`: on machines that carry the CPU wheel locally (pip's find-links) pip takes it;
#     elsewhere it resolves from PyPI (a CUDA build on Linux x86-64, so GPU users get CUDA);
#   - pick a build explicitly, e.g.  make train TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
#     or  make train TORCH_INDEX=https://download.pytorch.org/whl/cpu  for the CPU build from PyPI's index;
#   - keep a torch you installed yourself in .venv:  make train TORCH_SPEC=
# Every other package takes the version in LOCK (requirements/lock.txt, pip constraints; torch is not in it).
# Refresh the lock with `make lock`; install without it with `make setup LOCK=`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
LOCK ?= requirements/lock.txt
EXTRAS ?= dev,baselines,serve,launchers
STAMP := $(VENV)/.mtrank-installed
ARGS ?=
CONSTRAINTS = $(if $(strip $(LOCK)),-c $(LOCK))
LOCK_VENV := .lock-venv

.PHONY: setup train test test-slow test-all lock clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
ifneq ($(strip $(TORCH_SPEC)),)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(CONSTRAINTS) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
endif
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" $(CONSTRAINTS)
	@touch $(STAMP)

train: $(STAMP)
	$(PY) src/train.py experiment=multitask $(ARGS)

# MTRANK_LOCK: tests/test_lock.py then checks that the installed versions are the locked ones
test: $(STAMP)
	MTRANK_LOCK=$(LOCK) $(PY) -m pytest -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(ARGS)

# Resolve the whole dependency set afresh (newest versions the ranges in pyproject.toml allow) in a scratch
# environment, with the same torch build step as setup, and write it to requirements/lock.txt.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --upgrade --quiet pip
ifneq ($(strip $(TORCH_SPEC)),)
	$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
endif
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(LOCK_VENV)/bin/python scripts/write_lock.py --out requirements/lock.txt
	rm -rf $(LOCK_VENV)

clean-data:
	rm -rf data/raw data/processed
