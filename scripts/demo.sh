#!/usr/bin/env bash
# The demo: first the shipped pair (pretrained:autoencoder and its SE twin,
# trained long: docs/pretrained.md) on crops of photographs neither saw,
# side by side; then train a DeePSiM autoencoder and its SE twin (the same
# networks with only the pixel loss) on the default photos, reconstruct
# the same crops, side by side, and print both runs' eval.json.
#   scripts/demo.sh OUT_DIR PHOTO_DIR...
# Environment: DEMO_STEPS (DeePSiM's steps, 1500), DEMO_SE_STEPS (SE's,
# two thirds of them: SE's twin is the one shortened to keep the demo near
# 10 minutes on 2 cores; the table prints each run's steps).
set -euo pipefail
out=$1; shift
runner=${RUNNER:-bin/runner}
steps=${DEMO_STEPS:-1500}
se_steps=${DEMO_SE_STEPS:-$((steps * 2 / 3))}

rm -rf "$out"
# Twelve photographs held back, whole (scripts/split-photos.sh).
"$(dirname "$0")/split-photos.sh" "$out" "$@"
"$runner" crops --data "$out/heldout" --out "$out/heldout-crops" --n 8 --size 128 --seed 1

# The shipped pair, which trained on the same split: rows held-back crops |
# SE | DeePSiM, and both measured on 64 held-back crops.
for r in autoencoder-se autoencoder; do
	"$runner" reconstruct --run "pretrained:$r" --out "$out/shipped-$r" "$out/heldout-crops"
	"$runner" eval --run "pretrained:$r" --data "$out/heldout" --n 64 --seed 1 --json >"$out/shipped-$r.json"
done
go run ./scripts/montage -out "$out/shipped.png" "$out/heldout-crops" "$out/shipped-autoencoder-se" "$out/shipped-autoencoder"
echo
echo "the shipped pair on held-back crops ($out/shipped.png: crops | SE | DeePSiM), judged by $(jq -r .judge "$out/shipped-autoencoder.json"):"
{
	echo "run steps psnr ssim sharpness_ratio perceptual_distance grid_ratio"
	for r in autoencoder-se autoencoder; do
		name=$([ $r = autoencoder-se ] && echo SE || echo DeePSiM)
		jq -r --arg n "$name" --argjson s "$(jq .step "pretrained/autoencoders/$r/info.json")" \
			'[$n, $s, (.psnr*100|round/100), (.ssim*1000|round/1000), (.sharpness_ratio*1000|round/1000), (.perceptual_distance*1000|round/1000), (.grid_ratio*100|round/100)] | @tsv' \
			"$out/shipped-$r.json"
	done
} | column -t
echo

common=(--task autoencoder --data "$out/train" --heldout "$out/heldout" --batch 16 --size 64 --seed 1)
"$runner" train "${common[@]}" --out "$out/run" --steps "$steps" --checkpoint-every 250
"$runner" train "${common[@]}" --out "$out/se" --steps "$se_steps" --checkpoint-every 250 \
	--lambda-feat 0 --lambda-adv 0 --lambda-img 1
"$runner" reconstruct --run "$out/run" --out "$out/reconstructions" "$out/heldout-crops"
"$runner" reconstruct --run "$out/se" --out "$out/reconstructions-se" "$out/heldout-crops"
# Rows: the held-back crops, SE's reconstructions, DeePSiM's.
go run ./scripts/montage -out "$out/compare.png" "$out/heldout-crops" "$out/reconstructions-se" "$out/reconstructions"

echo
echo "held-back crops, judged by $(jq -r .judge "$out/run/eval.json") (a network neither run trained with):"
{
	echo "run steps psnr ssim sharpness_ratio perceptual_distance grid_ratio"
	for r in se run; do
		name=$([ $r = se ] && echo SE || echo DeePSiM)
		jq -r --arg n "$name" --argjson s "$(jq .steps "$out/$r/config.json")" \
			'[$n, $s, (.psnr*100|round/100), (.ssim*1000|round/1000), (.sharpness_ratio*1000|round/1000), (.perceptual_distance*1000|round/1000), (.grid_ratio*100|round/100)] | @tsv' \
			"$out/$r/eval.json"
	done
} | column -t
echo
echo "demo done."
echo "  runs:            $out/run (DeePSiM), $out/se (SE): config.json, metrics.jsonl, checkpoint.pt, eval.json, report.html"
echo "  shipped pair:    $out/shipped.png (rows: held-back crops | SE | DeePSiM, trained long)"
echo "  side by side:    $out/compare.png (rows: held-back crops | SE | DeePSiM)"
echo "  reconstructions: $out/reconstructions (grid.png: input | DeePSiM), $out/reconstructions-se"
