# The two commands the README opens with: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STATE  ?= .fleet
WORKERS ?= 2
# pytest-xdist processes for the suite. Most of a test's time is spent waiting on real
# processes (workers starting, heartbeats, runs paced by the echo engine's delays), so
# four share this project's two-core machines well; each has its own Redis database,
# PostgreSQL database, embedded broker and temporary folders (tests/integration/conftest.py).
# TEST_PROCS=0 runs the suite in one process. worksteal: an idle process takes tests
# from a busy one, so the slow integration tests do not end up queued behind each other.
TEST_PROCS ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_PROCS) --dist worksteal

.PHONY: install demo demo-vision test lint typecheck unit integration bench browser clean

# torch first, pinned: 2.13.0 is the CPU wheel on the machines' disk; a bare
# "torch" requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Builds the tiny demo model and runs the example file end to end on the embedded
# default (valkey-server + SQLite under $(STATE), $(WORKERS) local worker processes).
demo: $(STAMP)
	$(BIN)/fleet demo-model $(STATE)/demo-model
	$(BIN)/fleet run examples/contexts.jsonl --model $(STATE)/demo-model \
		--workers $(WORKERS) --max-new-tokens 16 --output $(STATE)/demo-output

# The same with images and a video, on the tiny demo vision model (README: Images and video).
demo-vision: $(STAMP)
	$(BIN)/fleet demo-model --vision $(STATE)/demo-vision
	$(BIN)/fleet run examples/vision/vision.jsonl --model $(STATE)/demo-vision \
		--workers $(WORKERS) --max-new-tokens 16 --video-frames 4 \
		--reference-field expected --scorer contains --output $(STATE)/demo-vision-output

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(PYTEST) tests/unit

integration: $(STAMP)
	$(PYTEST) tests/integration

# The report's test opens it in Debian's headless Chromium (driven by Selenium through
# chromium-driver): installed here when missing and we are root with apt-get. Otherwise
# that test skips saying why (and fails under CI=true).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				chromium chromium-driver) || echo "could not install chromium chromium-driver"; \
		else \
			echo "chromium/chromium-driver missing and not root: the browser test will skip"; \
		fi; \
	fi

test: lint typecheck browser
	$(PYTEST)

bench: $(STAMP)
	$(BIN)/python bench/batching.py

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache *.egg-info
