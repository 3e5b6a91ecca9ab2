#!/usr/bin/env bash
# The demo: train a DeePSiM autoencoder on the default photos for a few
# minutes, then reconstruct crops of photographs it never saw.
#   scripts/demo.sh OUT_DIR PHOTO_DIR...
set -euo pipefail
out=$1; shift
runner=${RUNNER:-bin/runner}
steps=${DEMO_STEPS:-1500}

rm -rf "$out"
# Twelve photographs held back, whole (scripts/split-photos.sh).
"$(dirname "$0")/split-photos.sh" "$out" "$@"

"$runner" train --task autoencoder --data "$out/train" --heldout "$out/heldout" --out "$out/run" \
	--steps "$steps" --batch 16 --size 64 --seed 1 --upsample resize --checkpoint-every 250
"$runner" crops --data "$out/heldout" --out "$out/heldout-crops" --n 8 --size 128 --seed 1
"$runner" reconstruct --run "$out/run" --out "$out/reconstructions" "$out/heldout-crops"

echo
echo "demo done."
echo "  run folder:      $out/run (config.json, metrics.jsonl, checkpoint.pt, eval.json)"
echo "  run report:      $out/run/report.html"
echo "  reconstructions: $out/reconstructions"
echo "  grid (input | reconstruction): $out/reconstructions/grid.png"
