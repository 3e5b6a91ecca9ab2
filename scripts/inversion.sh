#!/usr/bin/env bash
# The README's inversion experiment: MobileNetV2 features from a shallow
# and a deep layer, each inverted with DeePSiM (all three terms) and with
# the image loss alone; each run evaluated on 256 held-back crops, and a
# figure of 8 held-back crops (first row) against the four runs'
# reconstructions. Needs make models and scripts/split-photos.sh SPLIT.
#   scripts/inversion.sh [SPLIT] [OUT]
set -euo pipefail
runner=${RUNNER:-bin/runner}
split=${1:-build/split}
out=${2:-runs/inversion}
mkdir -p "$out"
common=(--task inversion --target mobilenetv2 --data "$split/train" --heldout "$split/heldout"
	--seed 1 --threads 1 --upsample resize --log-every 10 --steps 2000 --checkpoint-every 500)
declare -A layer=([b3]=block_3_expand_relu [b10]=block_10_project_BN)
declare -A loss=([ds]="" [img]="--lambda-feat 0 --lambda-adv 0")
runs=(inv-b3-ds inv-b3-img inv-b10-ds inv-b10-img)
"$runner" crops --data "$split/heldout" --out "$out/crops" --n 8 --size 64 --seed 1
rows=("$out/crops")
for r in "${runs[@]}"; do
	IFS=- read -r _ l w <<<"$r"
	if [ ! -f "$out/$r/checkpoint.pt" ]; then
		# shellcheck disable=SC2086 # the loss flags are words
		"$runner" train "${common[@]}" --layer "${layer[$l]}" ${loss[$w]} --out "$out/$r"
	fi
	"$runner" eval --run "$out/$r" --data "$split/heldout" --n 256 --seed 1 --json >"$out/$r.eval.json"
	"$runner" reconstruct --run "$out/$r" --out "$out/$r.recon" "$out"/crops/*.png
	rows+=("$out/$r.recon")
done
go run ./scripts/montage -out "$out/inversion.png" "${rows[@]}"
echo "inversion: $out/inversion.png and $out/*.eval.json"
