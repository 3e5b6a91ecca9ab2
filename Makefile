# deepsim: two commands set up everything on a fresh Debian 12 machine with Go:
#   make demo   train a small DeePSiM autoencoder on the default photos
#   make test   run the test suite
# Both install what is missing first (make deps).

GO       ?= go
BIN      := bin/runner
DEMO     ?= build/demo
# Debian packages: the engine, a fast BLAS for it, the default photos, and
# the headless browser the run-report test renders with.
DEB_PKGS := libtorch-dev libopenblas0-openmp mate-backgrounds plasma-workspace-wallpapers chromium
# Photos the default demo trains on.
PHOTOS   ?= /usr/share/backgrounds /usr/share/wallpapers
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo bench clean

all: build

# Installs only the packages that are missing, and nothing else.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all installed"; fi

build: deps
	$(GO) build -o $(BIN) ./cmd/runner

# -count=1: never a cached pass, since some tests use programs (chromium)
# that Go's test cache cannot see.
test: deps
	@bad=$$(gofmt -l .); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

demo: build
	./scripts/demo.sh $(DEMO) $(PHOTOS)

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./runner

clean:
	rm -rf bin build
