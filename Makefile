# The two commands a newcomer needs: `make lab` and `make test`. Everything else is for maintainers.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.course-installed
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup lock lab test test-numerics test-numerics-all test-full test-fast doctor prepare execute book serve-book bench editions slides timings clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/assets.txt scripts/setup.sh
	bash scripts/setup.sh

## Rewrite requirements/constraints.txt from the installed environment (after changing a range in pyproject.toml).
lock: setup
	bash scripts/lock.sh

## Open the course in JupyterLab (sets up and prepares assets on first use).
lab: setup
	$(PY) -m course_lib prepare
	bash binder/lab-settings.sh $(PY)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

## Set up if needed, prepare assets, and run every test (unit, equivalence, browser, notebooks); then the numeric
## tests and lessons 00-03 and 05 once more under a second floating-point configuration (docs/notebook_policy.md).
test: setup
	bash scripts/ensure-chromium.sh
	$(PY) -m course_lib prepare
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-numerics

## The numeric tests and the notebooks under the alternate configuration (portable kernels, one thread); the
## lessons that train or fit for minutes (04, 06, 07, 08) only in test-numerics-all, which runs before a release.
test-numerics: setup
	env $$($(PY) scripts/kernel_env.py alternate) $(PY) -m pytest -m numeric $(PYTEST_ARGS)

test-numerics-all: setup
	env $$($(PY) scripts/kernel_env.py alternate) $(PY) -m pytest -m "numeric or numeric_all" $(PYTEST_ARGS)

## Every notebook in the full profile on whatever device is present; checks each notebook's own assertions.
test-full: setup
	$(PY) -m course_lib prepare
	$(PY) scripts/nbval_run.py --profile full --record $(NB)

## Only the fast unit tests.
test-fast: setup
	$(PY) -m pytest -m "not slow and not browser and not notebooks" $(PYTEST_ARGS)

doctor: setup
	$(PY) -m course_lib doctor

prepare: setup
	$(PY) -m course_lib prepare

clean:
	rm -rf book/_build editions slides .pytest_cache

## Student edition (solutions and speaker notes removed) in editions/student, instructor edition in editions/instructor.
editions: setup
	$(PY) -m course_lib editions --out editions

## reveal.js lecture slides in slides/ (open slides/NN_*.slides.html in a browser; works offline).
slides: setup
	$(PY) -m course_lib slides --out slides

## Re-execute notebooks in place (quick profile, network blocked) and record run times; NB=notebooks/00_x.ipynb for some.
execute: setup
	$(PY) -m course_lib prepare
	$(PY) scripts/execute_notebooks.py $(NB)

## Render docs/timings.md from docs/timings.json.
timings: setup
	$(PY) scripts/timings.py

## Build the course website into book/_build/html (offline, warnings are errors).
book: setup
	bash scripts/build_book.sh

## Serve the built website on http://localhost:8000.
serve-book:
	$(PY) scripts/serve_book.py $(SERVE_ARGS)

## Benchmarks (fine-tuning recipes, encoder inference, generation) into bench/results/; BENCH_ARGS="--device cuda" on a GPU.
bench: setup
	$(PY) -m course_lib prepare
	$(PY) bench/run_all.py $(BENCH_ARGS)
