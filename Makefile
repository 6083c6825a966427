# VideosDGX: `make run` serves on 127.0.0.1:8188, `make test` runs every test.
# The first use installs what is missing (see scripts/setup.sh).

VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
export VIDEOSDGX_PYTHON := $(VENV)/bin/python

.PHONY: setup build run test lint bench

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release

run: build
	./target/release/videosdgx --listen 127.0.0.1 --port 8188

test: setup
	bash scripts/build_sm90_kernels.sh
	cargo build --bins
	cargo test --lib --bins --tests -- --test-threads=2
	$(VENV)/bin/python -m pytest -q tests/python
	bash scripts/check_aarch64.sh

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

bench: setup
	cargo bench --bench server_latency
