# One virtualenv for everything. TORCH_SPEC is installed before anything that depends on torch
# (see README: PyPI's Linux wheel is the CUDA build; pass --index-url for another variant).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test quickstart bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline \
		$(PY) -m pytest -n 2 --timeout 900 $(PYTEST_ARGS)

quickstart: $(STAMP)
	DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
		$(PY) launch/quickstart.py $(ARGS)

clean:
	rm -rf $(VENV) quickstart_out
