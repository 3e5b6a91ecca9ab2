#!/usr/bin/env bash
# The demo: train a small DeePSiM autoencoder on the default photos for a few
# minutes, then reconstruct crops of photos it never saw.
#   scripts/demo.sh OUT_DIR PHOTO_DIR...
set -euo pipefail
out=$1; shift
runner=${RUNNER:-bin/runner}
steps=${DEMO_STEPS:-300}

rm -rf "$out"
mkdir -p "$out/train" "$out/heldout"
# Hold back every 10th photo (in sorted order); link the rest for training.
i=0
while IFS= read -r f; do
	dest=train
	[ $((i % 10)) -eq 0 ] && dest=heldout
	ln -s "$f" "$out/$dest/$(printf '%04d' "$i")-$(basename "$f")"
	i=$((i + 1))
done < <(find "$@" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | LC_ALL=C sort)
echo "demo: $(ls "$out/train" | wc -l) training photos, $(ls "$out/heldout" | wc -l) held back"

"$runner" train --task autoencoder --data "$out/train" --heldout "$out/heldout" --out "$out/run" \
	--steps "$steps" --batch 16 --size 64 --seed 1 --checkpoint-every 50
"$runner" crops --data "$out/heldout" --out "$out/heldout-crops" --n 8 --size 128 --seed 1
"$runner" reconstruct --run "$out/run" --out "$out/reconstructions" "$out/heldout-crops"

echo
echo "demo done."
echo "  run folder:      $out/run (config.json, metrics.jsonl, checkpoint.pt, eval.json)"
echo "  run report:      $out/run/report.html"
echo "  reconstructions: $out/reconstructions"
echo "  grid (input | reconstruction): $out/reconstructions/grid.png"
