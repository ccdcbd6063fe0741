# mtrank — two commands from a fresh clone:  `make train`  and  `make test`.
#
# The virtual environment lives in .venv. torch is installed first, from TORCH_SPEC, so that the
# project's `torch>=2.3` requirement never pulls a build you did not choose:
#   - default `torch==2.13.0`: on machines that carry the CPU wheel locally (pip's find-links) pip takes it;
#     elsewhere it resolves from PyPI (a CUDA build on Linux x86-64, so GPU users get CUDA);
#   - pick a build explicitly, e.g.  make train TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
#     or  make train TORCH_INDEX=https://download.pytorch.org/whl/cpu  for the CPU build from PyTorch's index;
#   - keep a torch you installed yourself in .venv:  make train TORCH_SPEC=
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.mtrank-installed
ARGS ?=

.PHONY: setup train test test-slow test-all clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
ifneq ($(strip $(TORCH_SPEC)),)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
endif
	$(PY) -m pip install --quiet -e ".[dev,baselines]"
	@touch $(STAMP)

train: $(STAMP)
	$(PY) src/train.py experiment=multitask $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(ARGS)

clean-data:
	rm -rf data/raw data/processed
