# diad - the two commands are `make run` and `make test`; everything else is a helper.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

TORCHENV := backend/buildenv/torchenv.sh
# Where `make run` listens (loopback only) and keeps its data.
ADDR ?= 127.0.0.1:8080
DATA ?= var
# The results folder `diad test` and `diad predict --store` write by default,
# so that the server started by `make run` lists the CLI's runs too.
RESULTS ?= results/runs
# The committed demo model (trained by `diad train --base demo`; see its README).
DEMO_MODEL ?= backend/model/demo/model.safetensors
# Packages run one at a time: each libtorch test process uses every core, and
# two at once on 2 cores spin against each other (OpenMP busy-waits): 13 min
# instead of about 5. Unchanged packages reuse Go's test cache; force a full
# run with GO_TEST_FLAGS="-count=1 -p 1".
GO_TEST_FLAGS ?= -p 1 -timeout 45m
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/diad-project/diad/backend/version.Version=$(VERSION)

.PHONY: all setup build dev-tools web run doctor photos photos-quality test-doctor test lint vet fuzz fuzz-targets httpfuzz soak slurm-test bench version info clean distclean

all: build

## setup: choose or prepare libtorch (LIBTORCH, system libtorch-dev, or a Debian 13 build root)
setup:
	@$(TORCHENV) setup

## build: compile bin/diad against the chosen libtorch
build: setup
	$(TORCHENV) exec go build -ldflags "$(LDFLAGS)" -o bin/diad ./cmd/diad

## dev-tools: compile bin/diad-dev, the developers' measuring harnesses (diad against PyTorch, sharing, profiles)
dev-tools: setup
	$(TORCHENV) exec go build -ldflags "$(LDFLAGS)" -o bin/diad-dev ./cmd/diad-dev

## web: compile the browser client (Go -> WebAssembly) into bin/web, where `diad serve` finds it
web:
	GOOS=js GOARCH=wasm CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/web/diad.wasm ./cmd/diad-web
	cp "$$(go env GOROOT)/lib/wasm/wasm_exec.js" bin/web/wasm_exec.js

## run: build the server and the client, start the server on $(ADDR)
run: build web
	$(TORCHENV) exec bin/diad serve --addr $(ADDR) --data-dir $(DATA) --results $(RESULTS) --demo --demo-model $(DEMO_MODEL)

## photos: build the photo set in var/photos (photographs from a pinned Debian package, painted defects, exact masks)
photos: build
	$(TORCHENV) exec bin/diad photos --out var/photos

## photos-quality: train the demo recipe from scratch on the photo set (one hour on 2 cores) and measure it
photos-quality: photos
	$(TORCHENV) exec bin/diad bench quality --train var/photos-run --data var/photos

## doctor: describe this machine (CPU, libtorch, oneDNN, BLAS, threads) and check its kernels compute right
doctor: build
	$(TORCHENV) exec bin/diad doctor

# test-doctor prints the doctor's report first in every test log, so that a
# run on a new CPU is diagnosed from the log alone. A failed check does not
# stop the suite: diad switches oneDNN off where it computes wrong, and the
# tests then show whether everything else holds.
test-doctor: build
	@$(TORCHENV) exec bin/diad doctor || echo "make test: diad doctor reports a failed check (above); the suite runs on"

# RACE_PKGS are the packages that do not link libtorch: their tests also run
# under the race detector (libtorch's OpenMP threads are invisible to it).
RACE_PKGS = ./backend/atomicfile ./backend/jobs ./backend/metrics ./backend/stream ./backend/strictjson \
	./backend/visual ./datasets ./frontend-wasm/api ./frontend-wasm/gallery ./frontend-wasm/trajectory \
	./frontend-wasm/tuning ./results ./shared ./backend/cpuinfo ./backend/torchpickle ./backend/shard ./backend/summary ./backend/merge ./backend/storyboard

# errcheck, from the Go module proxy at a fixed version: no error may go
# unchecked or be assigned to _ (-blank)
# except those backend/buildenv/errcheck-exclude.txt lists with a reason.
ERRCHECK := bin/errcheck
ERRCHECK_VERSION := v1.9.0
$(ERRCHECK):
	GOBIN=$(CURDIR)/bin go install github.com/kisielk/errcheck@$(ERRCHECK_VERSION)

## lint: errcheck over every package and its tests, host and WebAssembly builds
# (a test that discards an error can pass on input that failed to load), and
# codesize: no function over 80 lines, no file over 600 (those still over are
# listed in backend/buildenv/codesize-known.txt and may not grow)
ERRCHECK_FLAGS = -blank -exclude backend/buildenv/errcheck-exclude.txt
lint: setup $(ERRCHECK)
	go run ./backend/internal/codesize -known backend/buildenv/codesize-known.txt backend cmd shared datasets results frontend-wasm
	$(TORCHENV) exec $(ERRCHECK) $(ERRCHECK_FLAGS) \
		./backend/... ./cmd/... ./results/... ./shared/... ./datasets/... ./frontend-wasm/... ./docs/...
	$(TORCHENV) exec env GOOS=js GOARCH=wasm $(ERRCHECK) $(ERRCHECK_FLAGS) -tags diadhook \
		./frontend-wasm/... ./cmd/diad-web/... ./shared/...

## test: the doctor's report, vet, errcheck, the whole test suite (real libtorch), then the race detector over RACE_PKGS
test: setup test-doctor lint
	$(TORCHENV) exec go vet ./...
	$(TORCHENV) exec env GOOS=js GOARCH=wasm go vet ./cmd/diad-web ./frontend-wasm/... ./shared/...
	$(TORCHENV) exec env GOOS=js GOARCH=wasm go vet -tags diadhook ./cmd/diad-web ./frontend-wasm/... ./shared/...
	$(TORCHENV) exec go test $(GO_TEST_FLAGS) ./...
	$(TORCHENV) exec go test -race $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz-targets FUZZTIME=$(TEST_FUZZTIME)

# FUZZ_TARGETS are package:Target pairs; `make test` runs their seed corpora
# and fuzzes each for TEST_FUZZTIME, `make fuzz` for FUZZTIME. Counts (Nx),
# not durations: a duration can end while a worker is mid-input, which Go
# reports as a failure (golang/go#51484).
FUZZ_TARGETS = ./backend/cpuinfo:FuzzParse ./shared:FuzzDecodeFrame ./backend/strictjson:FuzzUnmarshal ./datasets:FuzzDecodeBytes \
	./datasets:FuzzVisASplitCSV ./results:FuzzImagesParquet ./backend/checkpoint:FuzzOpenSafetensors \
	./backend/checkpoint:FuzzOpenPickle ./backend/torchpickle:FuzzOpen ./backend/shard:FuzzParse ./results:FuzzShardFiles \
	./backend/storyboard:FuzzParseOptions ./shared:FuzzParseTrajectoryExport ./datasets/debpkg:FuzzExtract
FUZZTIME ?= 100000x
TEST_FUZZTIME ?= 2000x

## fuzz: run every fuzz target for FUZZTIME (default 10^5 inputs) each, then httpfuzz
fuzz: fuzz-targets
	$(MAKE) httpfuzz

## fuzz-targets: run every native fuzz target for FUZZTIME each
fuzz-targets: setup
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
		$(TORCHENV) exec go test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}"; \
	done

# HTTPFUZZ requests against a live server on loopback (make test sends 3000).
HTTPFUZZ ?= 100000

## httpfuzz: send HTTPFUZZ mutated requests to a live server: no unintended 5xx, bounded RSS
httpfuzz: setup
	$(TORCHENV) exec go test -run '^TestLiveHTTPFuzz$$' -v -timeout 60m ./backend/server -httpfuzz $(HTTPFUZZ)

# SOAK trajectories for make soak (make test runs a short form of 160).
SOAK ?= 2000

## soak: the server under SOAK demo-model trajectories from 4 clients (cancellations, slow readers, uploads, labels): RSS curve in var/soak.csv
soak: setup
	mkdir -p var
	$(TORCHENV) exec go test -count=1 -run '^TestSoak$$' -v -timeout 120m ./backend/server -soak $(SOAK) -soak-curve $(CURDIR)/var/soak.csv

## slurm-test: a sharded run on a real single-node Slurm cluster (installs slurm-wlm and munge; root) equals one process
slurm-test: setup
	deploy/slurm/selftest.sh

## bench: run the Go benchmarks (BENCH=regexp, PKG=./...)
bench: setup
	$(TORCHENV) exec go test -run '^$$' -bench '$(or $(BENCH),.)' -benchmem $(or $(PKG),./...)

## version: print diad, gotch, libtorch versions and devices
version: build
	$(TORCHENV) exec bin/diad version

## info: which libtorch setup chose
info:
	@$(TORCHENV) info

clean:
	rm -rf bin

## distclean: also remove the build root and build caches (.cache)
distclean: clean
	@if grep -qs "$(CURDIR)/.cache" /proc/self/mounts; then echo "something is mounted under .cache; not removing"; exit 1; fi
	rm -rf --one-file-system .cache
