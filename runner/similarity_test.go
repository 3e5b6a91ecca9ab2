package runner

import (
	"context"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/pretrained"
)

func similarity(t *testing.T, a, b, mapPath string) ([]Pair, string) {
	t.Helper()
	log, buf := captureLog()
	pairs, err := Similarity(context.Background(), SimilarityOptions{A: a, B: b, Comparator: DefaultComparator,
		Store: pretrained.Store{Home: t.TempDir()}, Map: mapPath, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return pairs, buf.String()
}

func TestSimilarityGrowsWithBlur(t *testing.T) {
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.png")
	img := testimages.Photo(11, 96, 80)
	if err := imaging.Save(img, ref); err != nil {
		t.Fatal(err)
	}
	if p, _ := similarity(t, ref, ref, ""); *p[0].Distance != 0 {
		t.Fatalf("distance of an image to itself = %v", *p[0].Distance)
	}
	prev := 0.0
	for _, sigma := range []float64{0.5, 1, 2, 4} {
		blurred := filepath.Join(dir, "blur.png")
		if err := imaging.Save(imaging.Blur(img, sigma), blurred); err != nil {
			t.Fatal(err)
		}
		p, _ := similarity(t, ref, blurred, "")
		if d := *p[0].Distance; d <= prev {
			t.Fatalf("blur sigma %v: distance %v, not above %v", sigma, d, prev)
		} else {
			prev = d
		}
	}
}

func TestSimilarityFolders(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, name := range []string{"same.png", "blurred.png", "only-a.png"} {
		imaging.Save(testimages.Photo(3, 64, 48), filepath.Join(a, name))
	}
	imaging.Save(testimages.Photo(3, 64, 48), filepath.Join(b, "same.png"))
	imaging.Save(imaging.Blur(testimages.Photo(3, 80, 60), 2), filepath.Join(b, "blurred.png")) // another size
	imaging.Save(testimages.Photo(4, 64, 48), filepath.Join(b, "only-b.png"))
	pairs, log := similarity(t, a, b, "")
	got := map[string]Pair{}
	for _, p := range pairs {
		got[p.Name] = p
	}
	if len(pairs) != 4 {
		t.Fatalf("%d results: %+v", len(pairs), pairs)
	}
	if p := got["same.png"]; p.Distance == nil || *p.Distance != 0 {
		t.Fatalf("same.png: %+v", p)
	}
	if p := got["blurred.png"]; p.Distance == nil || *p.Distance <= 0 {
		t.Fatalf("blurred.png: %+v", p)
	}
	for _, n := range []string{"only-a.png", "only-b.png"} {
		if p := got[n]; p.Distance != nil || !strings.Contains(p.Error, "only in") || !strings.Contains(log, n) {
			t.Fatalf("%s: %+v\n%s", n, p, log)
		}
	}
	if !strings.Contains(log, "sizes differ") || !strings.Contains(log, "blurred.png") {
		t.Fatalf("no warning about the resized pair:\n%s", log)
	}
}

func TestSimilarityMap(t *testing.T) {
	dir := t.TempDir()
	a, b, m := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png"), filepath.Join(dir, "map.png")
	img := testimages.Photo(5, 72, 40)
	imaging.Save(img, a)
	imaging.Save(imaging.Blur(img, 2), b)
	similarity(t, a, b, m)
	f, err := os.Open(m)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil || cfg.Width != 72 || cfg.Height != 40 {
		t.Fatalf("map: %+v, %v", cfg, err)
	}
}
