# Two commands do everything on a fresh machine: `make demo` and `make test`.
# torch==2.13.0 is installed first so that nothing pulls a multi-GB CUDA build of torch.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The demo's figures are recorded in a tracked file: the README's table must equal it (tests/test_readme.py).
demo: $(STAMP)
	$(PYTHON) examples/demo.py --results_file benchmarks/results/demo.json

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

clean:
	rm -rf $(VENV) outputs
