# An image with libtorch preinstalled and runner as its entrypoint. Its steps
# are the Makefile's own (make deps build), so the Makefile is what is tested.
FROM golang:1.26-bookworm
WORKDIR /src
COPY . .
RUN make deps build && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/src/bin/runner"]
