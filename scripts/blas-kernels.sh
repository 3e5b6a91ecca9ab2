#!/usr/bin/env bash
# The same training run under three OpenBLAS kernels, in alternating
# rounds: the old kernel OpenBLAS falls back to on a CPU it does not know
# (Prescott), and the AVX-512 and AVX2 ones (SkylakeX, Haswell). Prints the
# images/s of steps 21-40 and the image loss at step 40 (which shows that
# the kernels agree). Each run sets OPENBLAS_CORETYPE for itself alone.
#   scripts/blas-kernels.sh [ROUNDS] [PHOTO_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
photos=${2:-/usr/share/backgrounds}
go build -o bin/runner ./cmd/runner
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/data"
find -L "$photos" -type f -iname '*.jpg' | LC_ALL=C sort | head -12 | while IFS= read -r f; do ln -s "$f" "$tmp/data/"; done
export DEEPSIM_HOME=$tmp/home
for round in $(seq "$rounds"); do
	for core in Prescott SkylakeX Haswell; do
		out=$tmp/$round-$core
		env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$core bin/runner train --data "$tmp/data" --out "$out" \
			--size 64 --batch 16 --steps 40 --log-every 20 --threads 2 --comparator exemplar:conv2 --seed 1 2>"$out.log"
		kernel=$(grep -o 'blas_kernel=[A-Za-z0-9]*' "$out.log")
		ips=$(tail -1 "$out/metrics.jsonl" | grep -o '"images_per_sec":[0-9.]*' | cut -d: -f2)
		loss=$(tail -1 "$out/metrics.jsonl" | grep -o '"loss_img":[0-9.e-]*' | cut -d: -f2)
		printf 'round %d  %-22s %6.1f images/s  loss_img at step 40: %s\n' "$round" "$kernel" "$ips" "$loss"
	done
done
