#!/usr/bin/env bash
# The long reference run: the default DeePSiM autoencoder and its SE twin
# (the same networks with only the pixel loss), on the demo's split of the
# default photos, for REF_STEPS steps each. Resumable: run it again and
# each run continues from its last checkpoint (a session may end first).
# Each run evaluates its held-back crops every REF_KEEP steps (its
# heldout.jsonl: runner report draws the curves), and a copy of its
# checkpoint is kept at the same steps under OUT_DIR/snapshots-RUN.
#   scripts/reference.sh OUT_DIR PHOTO_DIR...
# Environment: REF_STEPS (20000), REF_KEEP (500), REF_THREADS (1 per run),
# REF_RUNS ("deepsim se": which runs, one after the other).
set -euo pipefail
out=$1
shift
runs=${REF_RUNS:-deepsim se} keep=${REF_KEEP:-500}
runner=${RUNNER:-bin/runner}

mkdir -p "$out"
[ -d "$out/train" ] || "$(dirname "$0")/split-photos.sh" "$out" "$@"

# snapshots RUN DIR: while RUN trains, copies each new checkpoint to
# DIR/STEP.pt. The checkpoint is saved every $keep steps, so the
# last logged step rounded down to $keep is the checkpoint's.
snapshots() {
	local run=$1 dir=$2 last=""
	mkdir -p "$dir"
	while sleep 2; do
		[ -f "$run/checkpoint.pt" ] || continue
		local t
		t=$(stat -c %Y.%s "$run/checkpoint.pt")
		[ "$t" = "$last" ] && continue
		last=$t
		local step
		step=$(tail -n 1 "$run/metrics.jsonl" | jq .step)
		step=$((step / keep * keep))
		if [ ! -f "$dir/$step.pt" ] && cp "$run/checkpoint.pt" "$dir/.$step.pt"; then
			mv -f "$dir/.$step.pt" "$dir/$step.pt"
		fi
	done
}

common=(--task autoencoder --data "$out/train" --heldout "$out/heldout" --batch 16 --size 64 --seed 1
	--steps "${REF_STEPS:-20000}" --checkpoint-every "$keep" --eval-every "$keep" --log-every 50 --threads "${REF_THREADS:-1}")
for name in $runs; do
	run=$out/$name
	flags=()
	[ "$name" = se ] && flags=(--lambda-feat 0 --lambda-adv 0 --lambda-img 1)
	[ -f "$run/checkpoint.pt" ] && flags+=(--resume)
	snapshots "$run" "$out/snapshots-$name" &
	watcher=$!
	"$runner" train "${common[@]}" "${flags[@]}" --out "$run" || { kill $watcher; exit 1; }
	sleep 3
	kill $watcher
done
[ -d "$out/deepsim" ] && [ -d "$out/se" ] && "$runner" report --out "$out/curves.html" "$out/se" "$out/deepsim"
