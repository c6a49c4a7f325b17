# fracseg: the two set-up commands of the README are `make demo` and `make test`; `make serve` starts the
# MONAI Label app.
# Both create .venv on first use (about 3-6 minutes: torch comes with monailabel's torchvision) and reuse
# it afterwards; the venv is rebuilt only when pyproject.toml changes.

# Python 3.11 or 3.12 (3.13 is blocked while MONAI Label needs numpy<2).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fracseg-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Large wheels (itk-core, 80 MB, comes with monailabel) have been cut off mid-download on CI; pip resumes a
# cut download this many times, and the whole install is tried up to three times before make gives up.
export PIP_RESUME_RETRIES := 20
export PIP_RETRIES := 10

.PHONY: venv demo serve pacs-demo ohif test test-fast lint format clean system-tools

# Debian tools the tests drive (command or file:package): dciodvfy validates DICOM SEG output; Orthanc
# with its DICOMweb plugin is the DICOMweb server of the QIDO/WADO/STOW test (run in a network namespace);
# chromium is the browser Playwright drives in the correction-page and OHIF tests (never a downloaded one); npm
# fetches the prebuilt OHIF viewer (`make ohif`).
SYSTEM_TOOLS := dciodvfy:dicom3tools Orthanc:orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb \
	chromium:chromium npm:npm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	for try in 1 2 3; do $(BIN)/python -m pip install --quiet -e '.[test]' && break; \
	  [ $$try = 3 ] && exit 1; echo "pip install failed (try $$try of 3), retrying in 20 s" >&2; sleep 20; done
	touch $(STAMP)

## Main job: segment the bundled sample X-rays (JPEG + DICOM) into outputs/demo/.
demo: $(STAMP)
	$(BIN)/fracseg infer data/samples --output outputs/demo
	@cat outputs/demo/predictions.csv

## MONAI Label app (monai_app/) on http://$(HOST):$(PORT) with the shipped weights, a datastore seeded with
## data/samples and the app's own bundle copy under $(SERVE_DIR). Loopback only unless HOST is changed.
HOST ?= 127.0.0.1
PORT ?= 8000
SERVE_DIR ?= outputs/monailabel
serve: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/monailabel start_server --app monai_app \
	  --studies $(SERVE_DIR)/datastore --host $(HOST) --port $(PORT) --uvicorn_app monai_app.asgi:app \
	  --conf model_dir $(SERVE_DIR)/model

## The PACS in the loop: Orthanc (deploy/orthanc/orthanc.json) with the sample DICOMs and the app started
## against it (--studies http://127.0.0.1:8042/dicom-web), both inside a private network namespace (Orthanc
## binds every interface); the app is brought out on http://127.0.0.1:$(PORT), OHIF (make ohif) on
## http://127.0.0.1:$(OHIF_PORT). Ctrl+C stops everything.
## Needs root (unshare --net) and the Debian orthanc + orthanc-dicomweb packages (make system-tools).
PACS_DIR ?= outputs/pacs-demo
OHIF_PORT ?= 3000
pacs-demo: $(STAMP) system-tools ohif
	$(BIN)/python scripts/pacs_demo.py --port $(PORT) --work $(PACS_DIR) \
	  --ohif $(OHIF_DIR)/$(OHIF_VERSION)/dist --ohif-port $(OHIF_PORT)

## OHIF viewer (prebuilt @ohif/app from the npm registry, never committed) into $(OHIF_DIR)/dist; served by
## scripts/ohif_server.py with deploy/ohif/app-config.js (the local Orthanc). Downloaded once (about 47 MB).
OHIF_VERSION ?= 3.12.0
OHIF_DIR ?= outputs/ohif
ohif: $(OHIF_DIR)/$(OHIF_VERSION)/dist/index.html
$(OHIF_DIR)/$(OHIF_VERSION)/dist/index.html:
	mkdir -p $(OHIF_DIR)/$(OHIF_VERSION)
	cd $(OHIF_DIR)/$(OHIF_VERSION) && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null \
	  && tar xzf ohif-app-$(OHIF_VERSION).tgz --strip-components=1 package/dist && rm ohif-app-$(OHIF_VERSION).tgz
	test -f $@

## Install missing Debian tools that the tests use (needs root or sudo; skipped when present). The
## packaged Orthanc service is stopped again: tests run their own Orthanc inside a network namespace.
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do t="$${pair%%:*}"; [ -e "$$t" ] || command -v "$$t" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	  || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	  case "$$missing" in *orthanc*) $(SUDO) service orthanc stop >/dev/null 2>&1 || true;; esac; \
	fi

## Lint, then the whole test suite (reads ../shared/data like CI) on two pytest-xdist workers: each test file runs
## whole on one worker (module fixtures are built once), each worker computes on one thread (tests/conftest.py);
## files go out in collection order, the longest first (tests/conftest.py LONGEST_FIRST), not xdist's
## most-tests-first reorder, which left the few-test long files running alone at the end.
TEST_WORKERS ?= 2
test: $(STAMP) system-tools ohif
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  --durations=15

## The unit tier only (no shipped-model runs, servers, browser or Orthanc): a few minutes.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf outputs .pytest_cache
