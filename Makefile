# One entry point for people and CI. `make test` and `make demo` set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# This machine's torch pair lies on local disk; a GPU host brings its own torch.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup test demo demo-data demo-shortcut-data bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo-data: $(STAMP)
	$(PY) -m engine.synth --config experiments.toml --host local --if-missing

# The twin with a residual core shortcut: B1 fails its core gate (docs/DATA.md, docs/PLAN.md).
demo-shortcut-data: $(STAMP)
	$(PY) -m engine.synth --config experiments.toml --dataset synthetic-shortcut --if-missing

demo: demo-data
	$(VENV)/bin/lenstui --config experiments.toml --host local

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
