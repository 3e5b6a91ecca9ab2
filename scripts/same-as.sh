#!/usr/bin/env bash
# Checks that this tree trains and infers exactly as an earlier commit does:
# for a fixed seed at --threads 1, every task writes byte-identical
# checkpoint.pt, config.json and metrics.jsonl (images_per_sec, a timing,
# masked), and eval --json, sample, similarity and reconstruct give
# identical bytes on the same run. For refactors that must change nothing.
# Known differences are masked: commits before the second structure round
# left "train_acc" out of a comparator run's metrics line when the batch
# accuracy was exactly 0 (a JSON omitempty); and settings added since the
# base, at values that change nothing here, appear in config.json and
# metrics.jsonl (eval_every, which needs --heldout; lambda_prior_adv and
# loss_prior_adv at 0).
#   scripts/same-as.sh [BASE_COMMIT] [PHOTO_DIR]
# BASE_COMMIT defaults to 8d724a7, the last commit before the third
# structure round (named losses and one update, a task in one place);
# PHOTO_DIR to the default photos (make deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-8d724a7}
photos=${2:-/usr/share/backgrounds}
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/src" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
export DEEPSIM_HOME=$tmp/home

echo "building $base and this tree"
git worktree add --detach "$tmp/src" "$base" >/dev/null
(cd "$tmp/src" && go build -o "$tmp/before" ./cmd/runner)
go build -o "$tmp/after" ./cmd/runner

# Four photos, the same files for both.
mkdir "$tmp/data"
find -L "$photos" -type f \( -iname '*.jpg' -o -iname '*.png' \) | LC_ALL=C sort | head -4 |
	while IFS= read -r f; do ln -s "$f" "$tmp/data/"; done

tiny=(--data "$tmp/data" --size 32 --batch 4 --steps 6 --checkpoint-every 3 --seed 3 --threads 1)
declare -A runs=(
	[autoencoder-deconv]="--task autoencoder --upsample deconv"
	[autoencoder-resize]="--task autoencoder --upsample resize"
	[autoencoder-adaptive]="--task autoencoder --d-warmup 0"
	[autoencoder-match-ema-patch]="--task autoencoder --d-warmup 0 --adv-weight fixed --lambda-adv 0.01 --lambda-match 1 --ema 0.9 --discriminator patch"
	[vae]="--task vae --upsample deconv"
	[comparator]="--task comparator --size 64 --batch 8 --classes 4"
	[inversion]="--task inversion --target exemplar --layer conv2 --upsample deconv"
)
fail=0
same() { # same WHAT FILE_A FILE_B
	if cmp -s "$2" "$3"; then echo "  same: $1"; else echo "  DIFFERENT: $1"; fail=1; fi
}
mask() { sed 's/"images_per_sec":[^,}]*//; s/,"train_acc":0\([,}]\)/\1/; s/"loss_prior_adv":0,//' "$1"; }
mask_config() { grep -v '^  "eval_every": 500,$\|^  "lambda_prior_adv": 0,$' "$1"; }
for name in "${!runs[@]}"; do
	echo "$name"
	for bin in before after; do
		# shellcheck disable=SC2086
		"$tmp/$bin" train "${tiny[@]}" ${runs[$name]} --out "$tmp/$bin-$name" 2>/dev/null
	done
	same checkpoint.pt "$tmp/before-$name/checkpoint.pt" "$tmp/after-$name/checkpoint.pt"
	same "config.json (settings added since masked)" <(mask_config "$tmp/before-$name/config.json") <(mask_config "$tmp/after-$name/config.json")
	same "metrics.jsonl (images_per_sec masked)" <(mask "$tmp/before-$name/metrics.jsonl") <(mask "$tmp/after-$name/metrics.jsonl")
	[ "$name" = comparator ] && same comparator.pt "$tmp/before-$name/comparator.pt" "$tmp/after-$name/comparator.pt"
done

# The commands that read a run, on the same run folders.
echo "commands on the same runs"
mkdir "$tmp/crops"
"$tmp/after" crops --data "$tmp/data" --out "$tmp/crops" --n 3 --size 48 --seed 2 2>/dev/null
a=$(ls "$tmp/crops" | head -1) b=$(ls "$tmp/crops" | tail -1)
for bin in before after; do
	"$tmp/$bin" eval --run "$tmp/before-autoencoder-deconv" --data "$tmp/data" --n 8 --json >"$tmp/$bin.eval" 2>/dev/null
	"$tmp/$bin" sample --run "$tmp/before-vae" --n 6 --seed 2 --out "$tmp/$bin-sample.png" 2>/dev/null
	"$tmp/$bin" similarity "$tmp/crops/$a" "$tmp/crops/$b" --json >"$tmp/$bin.sim" 2>/dev/null
	"$tmp/$bin" reconstruct --run "$tmp/before-autoencoder-resize" --out "$tmp/$bin-recon" "$tmp/crops" 2>/dev/null
	"$tmp/$bin" reconstruct --run "$tmp/before-inversion" --out "$tmp/$bin-recon-inversion" "$tmp/crops" 2>/dev/null
	"$tmp/$bin" eval --run "$tmp/before-inversion" --data "$tmp/data" --n 8 --json >"$tmp/$bin.eval-inversion" 2>/dev/null
done
same "eval --json" "$tmp/before.eval" "$tmp/after.eval"
same "eval --json (inversion)" "$tmp/before.eval-inversion" "$tmp/after.eval-inversion"
same "sample" "$tmp/before-sample.png" "$tmp/after-sample.png"
same "similarity --json" "$tmp/before.sim" "$tmp/after.sim"
for f in "$tmp/before-recon"/*.png "$tmp/before-recon-inversion"/*.png; do
	same "reconstruct $(basename "$(dirname "$f")")/$(basename "$f")" "$f" "${f/before-recon/after-recon}"
done
if [ $fail = 0 ]; then echo "same as $base"; else echo "NOT the same as $base"; fi
exit $fail
