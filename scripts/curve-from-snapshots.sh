#!/usr/bin/env bash
# Writes RUN/heldout.jsonl from checkpoints kept at several steps
# (SNAPDIR/STEP.pt, as scripts/reference.sh keeps them), for a run that
# trained without --eval-every: each point is runner eval on the same 64
# seeded held-back crops and under the same judge as the curve's, and its
# minutes are the snapshot's time since the run began (config.json's).
# Points the curve already has are kept; a later resume appends.
#   scripts/curve-from-snapshots.sh RUN SNAPDIR
set -euo pipefail
run=$1 snaps=$2
runner=${RUNNER:-bin/runner}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
began=$(stat -c %Y "$run/config.json")
heldout=$(jq -r '.heldout | join(",")' "$run/config.json")
curve=$run/heldout.jsonl
touch "$curve"
for snap in $(ls "$snaps" | sed -n 's/^\([0-9]*\)\.pt$/\1/p' | sort -n); do
	grep -q "\"step\":$snap," "$curve" && continue
	cp "$run/config.json" "$tmp/config.json"
	ln -sf "$(readlink -f "$snaps/$snap.pt")" "$tmp/checkpoint.pt"
	minutes=$(echo "($(stat -c %Y "$snaps/$snap.pt") - $began) / 60" | bc -l)
	"$runner" eval --run "$tmp" --data "$heldout" --n 64 --seed 1 --json 2>/dev/null |
		jq -c --argjson s "$snap" --argjson m "$minutes" \
			'{step: $s, minutes: $m, psnr, ssim, sharpness_ratio, grid_ratio, perceptual_distance, judge}' >>"$curve"
	echo "step $snap: $(tail -1 "$curve")"
done
# In step order, as training appends them.
jq -s -c 'sort_by(.step) | .[]' "$curve" >"$tmp/sorted" && cp "$tmp/sorted" "$curve"
