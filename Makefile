# dat_det: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/demo/dino-3scale_dat++-pico_shapes.py
DEMO_WORK_DIR ?= work_dirs/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint data clean

install:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash tools/install.sh

data: install
	@$(PY) tools/misc/generate_shapes_dataset.py --out data/shapes --if-missing

demo: data
	@CONFIG=$(DEMO_CONFIG) WORK_DIR=$(DEMO_WORK_DIR) PY=$(PY) bash tools/demo.sh

test: install
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check .

clean:
	rm -rf work_dirs .pytest_cache
