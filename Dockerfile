# deepsim's image: runner with libtorch and OpenBLAS, and the two trained
# networks of the pinned nsfwjs package imported, so that nothing is
# downloaded when it runs. CPU only: Debian's libtorch has no CUDA.
#   make image          (makes debian:bookworm with debootstrap where no
#                        registry can be reached)
#   docker build -t deepsim .
ARG BASE=debian:bookworm

# The build stage: the Makefile's own steps (make models builds runner and
# imports the networks), so the Makefile is what the image tests.
FROM ${BASE} AS build
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
# Go 1.23 from bookworm-backports fetches the toolchain go.mod names from
# the Go module proxy (GOTOOLCHAIN), checked against sum.golang.org.
RUN echo "deb ${DEBIAN_MIRROR} bookworm-backports main" >/etc/apt/sources.list.d/backports.list && \
    apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates make g++ golang-1.23-go npm libtorch-dev libgloo-dev libopenblas0-openmp libturbojpeg0-dev libjpeg62-turbo-dev >/dev/null
# PEM certificates the build must trust besides Debian's, such as those of
# a TLS-intercepting proxy between it and the registries (make image passes
# the host's /usr/local/share/ca-certificates).
ARG CA_CERTS=
RUN if [ -n "$CA_CERTS" ]; then \
        printf '%s\n' "$CA_CERTS" >/usr/local/share/ca-certificates/build.crt && update-ca-certificates >/dev/null; fi
ENV PATH=/usr/lib/go-1.23/bin:$PATH GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false DEEPSIM_HOME=/store \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download && go version
COPY . .
RUN make models DEB_PKGS="libtorch-dev libgloo-dev libopenblas0-openmp libturbojpeg0-dev libjpeg62-turbo-dev"

# The runtime stage: the engine's shared libraries, no compiler, no headers.
FROM ${BASE}
RUN apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libtorch1.13 libgloo0 libopenblas0-openmp libturbojpeg0 libjpeg62-turbo >/dev/null && \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY --from=build /src/bin/runner /usr/local/bin/runner
# A library missing from the list above fails the build, not the first run.
RUN ! ldd /usr/local/bin/runner | grep 'not found'
RUN useradd --uid 1000 --user-group --create-home deepsim && \
    mkdir -p /data /runs /store && chown deepsim:deepsim /runs /store
# /store is the comparator store (DEEPSIM_HOME). A named volume mounted there
# starts with the two imported networks and keeps what `comparator import`
# adds; /data (images) and /runs (run folders) are for bind mounts.
COPY --from=build --chown=deepsim:deepsim /store/comparators /store/comparators
ENV DEEPSIM_HOME=/store
USER deepsim
WORKDIR /runs
# docker stop sends SIGINT, as Ctrl-C would: runner saves a checkpoint and
# exits with 130.
STOPSIGNAL SIGINT
ENTRYPOINT ["runner"]
CMD ["--help"]
