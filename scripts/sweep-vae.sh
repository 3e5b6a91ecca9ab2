#!/usr/bin/env bash
# The VAE's sweep (issue 35): SE-VAE and DeePSiM-VAE configurations trained
# on the demo's split at the demo's scale, their samples judged against
# crops of the held-back photographs (runner sample --ref: sharpness and
# grid ratios, KID, FID) and their reconstructions by runner eval, one row
# per run in OUT/sweep-vae.tsv. A run already judged is skipped, so the
# sweep resumes. The autoencoder's sweep is scripts/sweep.sh.
#   scripts/sweep-vae.sh OUT [NAME...]      (default: every configuration)
# Environment: STEPS (1500), THREADS (1), SEED (1), PHOTOS.
set -euo pipefail
out=$1
shift
seed=${SEED:-1} steps=${STEPS:-1500}
runner=${RUNNER:-bin/runner}
photos=${PHOTOS:-/usr/share/backgrounds /usr/share/wallpapers}

# name, then the flags beside the VAE's defaults (the reference loss:
# fixed adversarial weight 0.01, KL weight 1e-3 warming up over 500 steps).
configs=(
	"se|--lambda-feat 0 --lambda-adv 0 --lambda-img 1"
	"default|"
	"prior0.1-adv0.1|--lambda-adv 0.1 --lambda-prior-adv 0.1"
	"prior0.01|--lambda-prior-adv 0.01"
	"prior0.1-adaptive|--adv-weight adaptive --lambda-adv 0.8 --d-warmup 300 --beta1 0.5 --lambda-prior-adv 0.1"
	"prior0.1-adv0.1-kl1e-2|--lambda-adv 0.1 --lambda-prior-adv 0.1 --kl-weight 0.01"
	"prior0.1-adv0.1-klwarm0|--lambda-adv 0.1 --lambda-prior-adv 0.1 --kl-warmup 0"
	"prior0.3-adv0.1|--lambda-adv 0.1 --lambda-prior-adv 0.3"
)

mkdir -p "$out"
[ -d "$out/split/train" ] || "$(dirname "$0")/split-photos.sh" "$out/split" $photos
table=$out/sweep-vae.tsv
[ -f "$table" ] || printf 'run\tseed\tsteps\tsample_sharpness\tsample_grid\tkid\tkid_std\tfid\trecon_psnr\trecon_sharpness\tflags\n' >"$table"

want=" $* "
for c in "${configs[@]}"; do
	name=${c%%|*} flags=${c#*|}
	[ $# -eq 0 ] || [[ $want == *" $name "* ]] || continue
	run=$out/$name-s$seed-$steps
	grep -q "^$name	$seed	$steps	" "$table" && continue
	rm -rf "$run"
	# shellcheck disable=SC2086 # flags are words
	"$runner" train --task vae --data "$out/split/train" --heldout "$out/split/heldout" --out "$run" \
		--steps "$steps" --batch 16 --size 64 --seed "$seed" --threads "${THREADS:-1}" \
		--checkpoint-every 500 --log-every 10 $flags >"$run.log" 2>&1
	smp=$("$runner" sample --run "$run" --n 256 --seed 1 --out "$run/samples.png" --ref "$out/split/heldout" --json 2>>"$run.log")
	rec=$("$runner" eval --run "$run" --data "$out/split/heldout" --n 256 --json --judge inceptionv3 2>>"$run.log")
	row=$(jq -r --argjson r "$rec" '[.sharpness_ratio, .grid_ratio, .kid, .kid_std, .fid, $r.psnr, $r.sharpness_ratio] | map(. * 10000 | round / 10000) | @tsv' <<<"$smp")
	printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$seed" "$steps" "$row" "$flags" >>"$table"
	echo "sweep-vae: $name done: $row"
done
column -t -s $'\t' "$table"
