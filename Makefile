# metahpo: `make lab` opens the course, `make test` runs every test. Both use ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# A CPU-only PyTorch (about 200 MB instead of several GB on Linux):
#   make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: lab test exercises bench clean site test-browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# torch first, on its own, so that an installed build (CPU or CUDA) is kept as it is
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/python -m pip install "torch>=2.1" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.course: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -e ".[course]"
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.course
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

$(VENV)/.site: pyproject.toml $(VENV)/.course
	$(BIN)/python -m pip install -e ".[site]"
	touch $@

$(VENV)/.browser: pyproject.toml $(VENV)/.test $(VENV)/.site
	$(BIN)/python -m pip install -e ".[browser]"
	touch $@

# JupyterLab serves the whole course (notebooks/, exercises/, solutions/) and opens notebook 00;
# as root (e.g. in a container) Jupyter also needs --allow-root
lab: $(VENV)/.course
	$(BIN)/jupyter lab --LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb \
	  $(if $(filter 0,$(shell id -u)),--allow-root)

test: $(VENV)/.test
	$(BIN)/python -m pytest

exercises: $(VENV)/.course
	$(BIN)/metahpo-exercises generate

bench: $(VENV)/.course
	$(BIN)/python -m pip install --no-deps higher torchopt optree graphviz   # optional rivals; never replace torch
	$(BIN)/python benchmarks/hypergrad.py        # unrolled vs higher, reverse vs forward, implicit vs torchopt
	$(BIN)/python benchmarks/maml.py speed       # MAML meta-step vs loop, higher, torchopt, bare vmap
	@echo "Long runs that regenerate the notebooks' result files (hours on a CPU):"
	@echo "  $(BIN)/python benchmarks/maml.py reproduce;  $(BIN)/python benchmarks/meta_hpo_nets.py;  $(BIN)/python benchmarks/meta_hpo_tables.py"

# the course website, from the committed executed notebooks (nothing re-executed), into build/site/:
# any Sphinx warning fails it (-W), then every internal link and anchor is checked, and no page may
# load anything from the network. Open build/site/index.html in a browser.
site: $(VENV)/.site
	rm -rf build/site
	$(BIN)/python -m sphinx -W --keep-going -b html -q docs build/site
	$(BIN)/python docs/check_links.py build/site
	@echo "The website is in build/site/: open build/site/index.html"

# a headless Chromium (Debian's chromium package; skipped with the reason when there is none)
# reads the website and runs a chapter in JupyterLab started by `make lab`; screenshots go to
# build/screenshots/
test-browser: $(VENV)/.browser site
	METAHPO_BROWSER_TESTS=1 $(BIN)/python -m pytest tests/browser -v -rs

clean:
	rm -rf $(VENV) *.egg-info
