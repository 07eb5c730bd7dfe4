# Every target calls the CLI (or pytest) inside .venv; .venv is created or refreshed on demand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp
COMPETITION ?= dogs-vs-cats-redux-kernels-edition
DATA   ?= data
BACKEND ?= tensorflow
export KERAS_BACKEND ?= $(BACKEND)
C_ARGS := -c $(COMPETITION) --data-dir $(DATA)
# FOLDER=DIR: analyze, cv and submit read that data folder (its runs) instead of the competition's.
SRC_ARGS = $(if $(FOLDER),--folder $(FOLDER),$(C_ARGS))

.PHONY: venv lint format test test-fast demo real download train cv analyze submit bench wheel lesson clean

venv: $(STAMP)

# torch is pinned to the CPU wheel that lies on disk; an unpinned torch pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e ".[tensorflow-cpu,jax,test,hub-light]" "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
	# keras-hub without its dependencies: they would add tensorflow-text, the full tensorflow and an older kaggle client.
	$(PY) -m pip install -q --no-deps "keras-hub==0.32.0" 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import keras, tensorflow, jax, torch, kit, keras_hub" && touch $(STAMP)

test: venv lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=10 tests
	KERAS_BACKEND=jax $(PY) -m pytest -q -p no:cacheprovider -m backends tests
	KERAS_BACKEND=torch $(PY) -m pytest -q -p no:cacheprovider -m backends tests

# ruff's rules and line length live in pyproject.toml; `make format` applies them.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: venv
	$(PY) -m kit demo

# The lesson's recipe on real photos (kit/recipes/real.toml; `kit real` is `kit train --recipe real`):
# DATA= when given on the command line, else ../shared/dogscats.
REAL_DATA := $(if $(filter command line,$(origin DATA)),$(DATA),../shared/dogscats)
real: venv
	$(PY) -m kit real --folder $(REAL_DATA) $(if $(QUICK),--quick,) $(REAL_ARGS)

download: venv
	$(PY) -m kit download $(C_ARGS) $(DOWNLOAD_ARGS)

train: venv
	$(PY) -m kit train $(C_ARGS) $(TRAIN_ARGS)

# k-fold cross-validation (kit cv) of RECIPE (default: kit/recipes/real.toml) on FOLDER, else on COMPETITION:
# out-of-fold figures with their spread, and the fold ensemble that `make submit` then submits.
RECIPE ?= real
cv: venv
	$(PY) -m kit cv $(SRC_ARGS) --recipe $(RECIPE) $(CV_ARGS)

analyze: venv
	$(PY) -m kit analyze $(SRC_ARGS)

submit: venv
	$(PY) -m kit submit $(SRC_ARGS) $(if $(DRY_RUN),--dry-run,) $(if $(MESSAGE),-m "$(MESSAGE)",) $(SUBMIT_ARGS)

bench: venv
	$(PY) bench/cpu.py

lesson: venv
	$(PY) examples/lesson1.py

wheel: venv
	$(PY) -m pip wheel --no-deps -w dist . 2>&1 | grep -v "is ignored"

clean:
	rm -rf $(VENV) build dist *.egg-info
