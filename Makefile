# revrepl — Spanner change streams to sharded MySQL. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
NEXTEST_PROFILE ?= default
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
# Extra options for `revrepl demo`, e.g. make demo DEMO_ARGS="--duration 60s --keep".
DEMO_ARGS ?=

.PHONY: help setup test check fmt fmt-check lint doc plugin deploy-check demo

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-13s %s\n", $$1, $$2}'

setup: ## Install what builds and tests need: MariaDB (apt), fake-gcs-server and kubernetes-validate (.venv), cargo-nextest; check the Spanner emulator
	@bash tests/scripts/install-mariadb.sh
	@bash tests/scripts/install-fake-gcs.sh >/dev/null
	@bash tests/scripts/install-kubernetes-validate.sh >/dev/null
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	@bash tests/scripts/check-spanner-emulator.sh

test: setup ## Run every test (unit, contract, integration) with cargo nextest against real services on loopback
	$(CARGO) nextest run --workspace --profile $(NEXTEST_PROFILE) --no-fail-fast

check: fmt-check lint test ## The pre-push gate: formatting, clippy with -D warnings, all tests

fmt: ## Format all code
	$(CARGO) fmt --all

fmt-check: ## Fail if any code is not formatted
	$(CARGO) fmt --all -- --check

lint: ## Clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc: ## Build the API docs, warnings are errors
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps

plugin: ## Build the example plugins (cdylibs the routing and transformation tests load)
	$(CARGO) build -p revrepl-example-shard-router-plugin -p revrepl-example-transformation-plugin

deploy-check: ## Validate the Kubernetes manifests in deploy/k8s against the API schemas (strict)
	@bash tests/scripts/install-kubernetes-validate.sh >/dev/null
	.venv/bin/kubernetes-validate --strict deploy/k8s/*.yaml

demo: ## The whole pipeline on this machine (Spanner emulator, 2 MariaDB shards, workload, run, status, validate); installs MariaDB if missing
	$(CARGO) build -p revrepl-launcher -p revrepl-reader -p revrepl-writer --bins
	$(TARGET_DIR)/debug/revrepl demo $(DEMO_ARGS)

.PHONY: bench-reader
bench-reader: ## Reader benchmark in release: mods/s vs a parse-and-write baseline, peak RSS with a slow partition; fails below target (BENCH_READER_ARGS="--mods N ...")
	$(CARGO) bench -p revrepl-reader --bench reader_throughput -- $(BENCH_READER_ARGS)

.PHONY: bench-writer
bench-writer: ## Writer throughput on durable local MariaDB shards: rows/s, raw-limit and reference ratios, CPU, peak RSS, 4 shards (BENCH_WRITER_ARGS="--records N ...")
	$(CARGO) bench -p revrepl-writer --bench writer_throughput -- $(BENCH_WRITER_ARGS)

.PHONY: bench-validate
bench-validate: ## validate's rows/s per shard at the checkpoint vs reading both sides, and continuous mode's MySQL load at its default rate, on the emulator and MariaDB (BENCH_VALIDATE_ARGS="--rows N --continuous-seconds N")
	$(CARGO) bench -p revrepl-launcher --bench validate_throughput -- $(BENCH_VALIDATE_ARGS)

.PHONY: bench-lag
bench-lag: ## End-to-end lag, Spanner commit to MySQL apply, on the emulator and durable MariaDB: p50/p99/max and drain per window length (BENCH_LAG_ARGS="--rate N --seconds N --windows 1,2,10")
	$(CARGO) build --release -p revrepl-reader -p revrepl-writer --bins
	$(CARGO) bench -p revrepl-end-to-end --bench lag -- $(BENCH_LAG_ARGS)
