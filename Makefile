# deepsim: two commands set up everything on a fresh Debian 12 machine with Go:
#   make demo   train a small DeePSiM autoencoder and its SE twin on the default photos
#   make test   run the test suite
# Both install what is missing first (make deps).

GO       ?= go
BIN      := bin/runner
DEMO     ?= build/demo
# Debian packages: the engine, Gloo's headers (data-parallel training), a
# fast BLAS, libjpeg-turbo (JPEG decoded at the scale and region a crop
# needs: TurboJPEG, and libjpeg's API for regions), the
# default photos, the headless browser the run-report test renders
# with, and jq, which the demo and the sweep read eval.json with.
DEB_PKGS := libtorch-dev libgloo-dev libopenblas0-openmp libturbojpeg0-dev libjpeg62-turbo-dev mate-backgrounds plasma-workspace-wallpapers chromium jq
# Photos the default demo trains on.
PHOTOS   ?= /usr/share/backgrounds /usr/share/wallpapers
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Where runner keeps imported networks; the same default as the binary's.
DEEPSIM_HOME ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/deepsim
export DEEPSIM_HOME
# The one trained natural-image network that can be had offline: nsfwjs's
# Keras models (MIT), fetched from the npm registry and pinned by hash.
NSFWJS        := nsfwjs@4.4.0
NSFWJS_TGZ    := $(DEEPSIM_HOME)/npm/nsfwjs-4.4.0.tgz
NSFWJS_SHA256 := 585cd178f3b994337c4d10a87b080d342fc52f8b9bf0085c4d1f345a3a1c5382

.PHONY: all deps debs models build test demo bench bench-peer bench-data peer-debs fuzz image image-test clean

all: build

deps: debs $(NSFWJS_TGZ)

# Installs only the packages that are missing, and nothing else; npm too,
# where no npm is on the PATH.
debs:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all installed"; fi

# npm pack fetches the package tarball without installing or running
# anything; it takes its place only once its hash is checked.
$(NSFWJS_TGZ):
	@mkdir -p $(@D) && tmp=$$(mktemp -d) && \
	npm pack $(NSFWJS) --pack-destination "$$tmp" --silent >/dev/null && \
	if echo "$(NSFWJS_SHA256)  $$tmp/$(@F)" | sha256sum -c --quiet; then \
		mv "$$tmp/$(@F)" $@ && rmdir "$$tmp" && echo "deps: $(NSFWJS) in $@"; \
	else rm -rf "$$tmp"; echo "$(NSFWJS): the tarball's sha256 is not $(NSFWJS_SHA256)"; exit 1; fi

# Imports nsfwjs's MobileNetV2 and InceptionV3 into the store, where they
# are missing: the default judge of runner eval, and comparators.
models: build
	@for m in mobilenetv2:mobilenet_v2 inceptionv3:inception_v3; do \
		name=$${m%%:*}; dir=$${m#*:}; \
		[ -f "$(DEEPSIM_HOME)/comparators/$$name.json" ] || \
		$(BIN) comparator import $(NSFWJS_TGZ) --model $$dir --as $$name || exit 1; \
	done

build: deps
	$(GO) build -o $(BIN) ./cmd/runner

# -count=1: never a cached pass, since some tests use programs (chromium)
# and files (the nsfwjs tarball) that Go's test cache cannot see.
test: deps
	@bad=$$(gofmt -l .); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

demo: models
	./scripts/demo.sh $(DEMO) $(PHOTOS)

bench: build
	$(GO) test -run '^$$' -bench 'Train|Pipeline|Memory|Heldout|Checkpoint' -benchtime 1x -timeout 30m -v ./runner | grep -v '^=== '
	$(GO) test -run '^$$' -bench 'DataParallel' -benchtime 1x -timeout 30m -v ./cmd/runner | grep -v '^=== '

# deepsim against the same networks in PyTorch eager, alternating in one
# run, and against the standard PyTorch recipe end to end. The peer is
# Python: Debian's PyTorch packages, installed here and for nothing else.
PEER_PKGS := python3-torch python3-torchvision python3-pil
bench-peer: build peer-debs
	$(GO) test -run '^$$' -bench 'Peer' -benchtime 1x -timeout 60m -v ./runner | grep -v '^=== '

# Streaming data at scale: a synthetic ImageNet-like set of 100,000 JPEGs
# (made once, about 9 GB as folders and again as shards, under
# DEEPSIM_HOME/bench-data), trained on at 10k and 100k images, and the
# loader alone against torchvision's recipe.
bench-data: build peer-debs
	$(GO) test -run '^$$' -bench '^BenchmarkData$$' -benchtime 1x -timeout 90m -v ./cmd/runner | grep -v '^=== '

peer-debs:
	@missing=""; for p in $(PEER_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi

# Each fuzz target for FUZZTIME. Minimising a new input is capped: with
# Go's default (60 s each) the counters sit at 0/sec while it runs.
FUZZTIME ?= 2m
fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./pipeline
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./internal/torchfile
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./runner

# The Docker image deepsim:latest (Dockerfile), with the base made by
# debootstrap where no registry serves debian:bookworm; image-test runs it
# as a user would. Both start dockerd where none runs, and stop it after.
image:
	./scripts/image.sh

image-test: deps
	./scripts/image.sh --test

clean:
	rm -rf bin build
