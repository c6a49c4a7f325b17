# fracseg: the two set-up commands of the README are `make demo` and `make test`.
# Both create .venv on first use (about 3-6 minutes: torch comes with monailabel's torchvision) and reuse
# it afterwards; the venv is rebuilt only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fracseg-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Main job: segment the bundled sample X-rays (JPEG + DICOM) into outputs/demo/.
demo: $(STAMP)
	$(BIN)/fracseg infer data/samples --output outputs/demo
	@cat outputs/demo/predictions.csv

## Lint, then the whole test suite (reads ../shared/data like CI).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf outputs .pytest_cache
