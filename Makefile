# Frank. The two commands: `make run` and `make test`. See README.md.
SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The kiosk's downgrade floor before any release ran healthy (main.built): the
# last commit's date in UTC, not the clock's, so a build is reproducible.
BUILT   ?= $(shell TZ=UTC0 git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.built=$(BUILT)
FUZZTIME ?= 5s
# The race pass runs twice as many test binaries at once as there are cores:
# they wait on disks and servers, and at one per core a core sat idle (181 s
# against 150 s here). Beside the end-to-end lane make test keeps Go's
# default of one per core, since that lane fills the idle core.
NPROC   := $(shell nproc 2>/dev/null || echo 2)
RACE_P  ?= $(shell echo $$(( $(NPROC) * 2 )))
# No checkout's path in the binaries or in the build cache's keys, so a fresh
# clone (as CI makes) reuses what an earlier checkout compiled.
export GOFLAGS := $(strip $(GOFLAGS) -trimpath)
# Screenshots, axe-core results and printed receipts the browser tests keep.
export FRANK_UI_ARTIFACTS ?= $(CURDIR)/bin/artifacts

.PHONY: all build run test test-image deps lint lint-all cross cross-builds unit e2e race fuzz bench clean image image-rootfs

all: build

## build: put hub, kiosk and testbench into bin/
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./hub/cmd/hub ./appliance/cmd/kiosk ./testbench/cmd/testbench

## run: the hub and a kiosk on testbench peripherals; sells a demo stamp into var/labels/, runs until Ctrl-C
run: build
	bin/testbench run --dir var $(if $(FLEET),--fleet $(FLEET))

## test: install test dependencies (as root), lint, cross-build the kiosk, run every test, the short tests again under the race detector, fuzz every decoder briefly. The end-to-end package runs beside unit and race: it mostly waits on real processes, and leaves a core idle
test: deps lint cross
	@bash .ci/timed lanes bash .ci/together "$(MAKE) -s e2e" "$(MAKE) -s unit race RACE_P=$(NPROC)"
	@$(MAKE) -s fuzz

deps:
	@bash .ci/timed deps bash .ci/deps

lint:
	@bash .ci/timed lint $(MAKE) -s lint-all

lint-all:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags crashtest ./appliance/...
	$(GO) vet -tags imageboot ./images
	$(GO) tool staticcheck ./...
	$(GO) tool staticcheck -tags crashtest ./appliance/...
	$(GO) tool staticcheck -tags imageboot ./images
	bash .ci/pkgdoc

## cross: the kiosk for the Raspberry Pi, 64- and 32-bit, no cgo; prints the sizes
cross:
	@bash .ci/timed cross $(MAKE) -s cross-builds

cross-builds:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/linux-arm64/kiosk ./appliance/cmd/kiosk
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/linux-armv7/kiosk ./appliance/cmd/kiosk
	@ls -l bin/linux-arm64/kiosk bin/linux-armv7/kiosk | awk '{print "cross:", $$NF, $$5, "bytes"}'

## unit: every test but the end-to-end package's; then the hub's whole suite again on PostgreSQL, so every store-backed package it drives runs on both stores
unit:
	@bash .ci/timed unit $(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/testbench/e2e$$')
	@FRANK_TEST_DB=postgres bash .ci/timed unit-postgres $(GO) test -count=1 -timeout 10m ./hub

## e2e: the end-to-end tests: the real binaries, mosquitto, PostgreSQL, Chromium, the soaks
e2e:
	@bash .ci/timed e2e $(GO) test -count=1 -timeout 25m ./testbench/e2e

## race: the -short tests (unit and in-process; no Chromium, QEMU, packages or real binaries) under the race detector
race:
	@bash .ci/timed race $(GO) test -race -short -count=1 -p $(RACE_P) -timeout 15m ./...

## test-image: (root) build the Pi's root file system, boot it under qemu-system-aarch64 and prove it: systemd, udev, enrollment, a stamp sold and verified, the touchscreen, an update. About 31 minutes from scratch, 3 with the root file system's base cached (~/.cache/frank/rootfs); .ci/run runs it after make test (see README)
test-image: deps
	@bash .ci/timed test-image $(GO) test -tags imageboot -count=1 -timeout 80m -run TestImageBoots -v ./images

fuzz:
	@FUZZTIME=$(FUZZTIME) bash .ci/timed fuzz bash .ci/fuzz

clean:
	rm -rf bin var

## image: the Debian packages frank-kiosk (arm64, armhf) and frank-hub (amd64, arm64) into bin/images/; the version is images/VERSION+git<commits>.<hash>, or IMAGE_VERSION=1.2.3
image:
	GO=$(GO) bash images/build $(if $(IMAGE_VERSION),--version $(IMAGE_VERSION))

## image-rootfs: (root) the Raspberry Pi kiosk's root file system, Debian bookworm arm64 with frank-kiosk, into bin/images/rootfs (mmdebstrap, qemu-user-static; no block devices needed)
image-rootfs:
	bash images/build --only kiosk_arm64 --out bin/images/rootfs-debs
	bash images/rpi/build-rootfs bin/images/rootfs $$(ls -t bin/images/rootfs-debs/frank-kiosk_*_arm64.deb | head -1)

## bench: the purchase path against the raw signer, soft and SoftHSM2, and a 1-3 hub cluster on PostgreSQL; writes docs/benchmarks.md and the hubs' CPU profiles into docs/profiles/
bench: build cross deps
	mkdir -p docs/profiles
	bin/testbench bench --out docs/benchmarks.md --profiles docs/profiles
