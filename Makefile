# The two set-up commands of the README: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
RUN_DIR ?= runs/quick
BIN := $(VENV)/bin

.PHONY: install check-gl run test clean

$(BIN)/jepa-agent: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet --editable ".[dev]"
	touch $@

install: $(BIN)/jepa-agent

# Headless MuJoCo rendering needs EGL (libegl1) or OSMesa (libosmesa6).
check-gl:
	@$(PYTHON) -c "import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library('EGL') or ctypes.util.find_library('OSMesa') else 1)" \
	  || { echo "error: headless rendering needs EGL or OSMesa: sudo apt-get install libegl1 (or libosmesa6)"; exit 1; }

run: install check-gl
	$(BIN)/jepa-agent run experiment=quick hydra.run.dir=$(RUN_DIR)

# Two workers (pytest-xdist), a test file each at a time: 7-9 min on 2 cores (444 tests), about half of one worker.
test: install check-gl
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) build *.egg-info
