#!/usr/bin/env bash
# Builds the Docker image, and with --test runs it as a user would
# (TestImage in cmd/runner). Installs Docker's daemon (Debian's docker.io)
# and debootstrap where missing, and starts dockerd where none runs,
# stopping it again at the end.
#   scripts/image.sh [--test]
# Environment: IMAGE (deepsim:latest), BASE (debian:bookworm),
# DEBIAN_MIRROR (the first archive apt is configured with),
# DEEPSIM_HOME (where the debootstrapped base is cached).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-deepsim:latest}
base=${BASE:-debian:bookworm}
home=${DEEPSIM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/deepsim}
sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p; s/^deb  *\([^ ]*debian\)  *bookworm .*/\1/p' \
	/etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null | head -1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}

missing=
for p in docker.io debootstrap; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "image: installing$missing"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Debian's client: the one that matches its daemon.
docker=/usr/bin/docker
export DOCKER_BUILDKIT=0

if ! $sudo $docker info >/dev/null 2>&1; then
	log=$(mktemp)
	$sudo dockerd >"$log" 2>&1 &
	dockerd=$!
	trap 'echo "image: stopping the dockerd it started"; $sudo kill $dockerd; wait $dockerd || true; rm -f "$log"' EXIT
	for _ in $(seq 60); do $sudo $docker info >/dev/null 2>&1 && break; sleep 1; done
	$sudo $docker info >/dev/null 2>&1 || { echo "image: dockerd did not start:"; cat "$log"; exit 1; }
	echo "image: started dockerd"
fi

# The base: from the local images, else a registry, else debootstrap from
# Debian's archive, whose root file system is cached as a tarball.
if ! $sudo $docker image inspect "$base" >/dev/null 2>&1 &&
	! timeout 120 $sudo $docker pull "$base" >/dev/null 2>&1; then
	tarball=$home/image/${base//[:\/]/-}-minbase.tar
	if [ ! -f "$tarball" ]; then
		echo "image: no $base to pull; making it with debootstrap from $mirror"
		root=$(mktemp -d)
		$sudo debootstrap --variant=minbase "${base#*:}" "$root" "$mirror" >/dev/null
		mkdir -p "$(dirname "$tarball")"
		$sudo tar -C "$root" -c . >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
		$sudo rm -rf "$root"
	fi
	$sudo $docker import "$tarball" "$base" >/dev/null
	echo "image: $base imported from $tarball"
fi

# Certificates the host trusts besides Debian's (a proxy's, say): the build
# stage reaches the Go module proxy and the npm registry through the same
# network.
ca=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)
start=$(date +%s)
buildlog=build/image-build.log
mkdir -p build
if ! $sudo $docker build --build-arg BASE="$base" --build-arg DEBIAN_MIRROR="$mirror" --build-arg CA_CERTS="$ca" \
	-t "$image" . >"$buildlog" 2>&1; then
	tail -30 "$buildlog"; echo "image: the build failed; its log: $buildlog"; exit 1
fi
size=$($sudo $docker image inspect -f '{{.Size}}' "$image")
echo "image: built $image in $(($(date +%s) - start)) s, $((size / 1000000)) MB"

if [ "${1:-}" = --test ]; then
	start=$(date +%s)
	# The test calls docker itself: Debian's client first on its PATH.
	PATH=/usr/bin:$PATH DEEPSIM_IMAGE=$image go test -count=1 -run '^TestImage$' -v -timeout 30m ./cmd/runner
	echo "image: tested $image in $(($(date +%s) - start)) s"
fi
