#!/usr/bin/env bash
# Splits photos into OUT/train and OUT/heldout, as links, holding back
# whole pictures: no training file shows a held-back picture (no other
# resolution of a wallpaper, nor its preview screenshot). Each held-back
# picture is one file, its largest, so that all weigh the same. The
# held-back pictures are photographs: held-back reconstructions are of
# real scenes.
#   scripts/split-photos.sh OUT PHOTO_DIR...
set -euo pipefail
out=$1; shift
# Photographs among the default photos (mate-backgrounds and
# plasma-workspace-wallpapers), by the picture each file shows: its name
# for mate, its wallpaper's folder for plasma.
heldout='/mate/nature/(Dune|LadyBird|Storm|TwoWings|YellowFlower|Aqua)\.jpg$|/wallpapers/(EveningGlow|FallenLeaf|Path|OneStandsOut|BytheWater|ColorfulCups)/'
picture() { sed -E 's|^(.*/wallpapers/[^/]+)/.*$|\1|' <<<"$1"; }
rm -rf "$out/train" "$out/heldout"
mkdir -p "$out/train" "$out/heldout"
declare -A best size
i=0
while IFS= read -r f; do
	real=$(readlink -f "$f")
	if grep -Eq "$heldout" <<<"$real"; then
		p=$(picture "$real")
		s=$(stat -c %s "$real")
		if [ -z "${best[$p]:-}" ] || [ "$s" -gt "${size[$p]}" ]; then best[$p]=$real; size[$p]=$s; fi
	else
		ln -s "$real" "$out/train/$(printf '%04d' "$i")-$(basename "$real")"
	fi
	i=$((i + 1))
done < <(find -L "$@" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | LC_ALL=C sort)
for p in "${!best[@]}"; do
	ln -s "${best[$p]}" "$out/heldout/$(basename "$p" | sed 's/\.jpg$//')-$(basename "${best[$p]}")"
done
echo "split: $(ls "$out/train" | wc -l) training files; $(ls "$out/heldout" | wc -l) photographs held back, whole"
