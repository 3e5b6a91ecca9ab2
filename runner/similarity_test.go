package runner

import (
	"context"
	"fmt"
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

// trainedJudge imports nsfwjs's MobileNetV2 (make deps fetches the
// tarball) into a store of the test's own.
func trainedJudge(t *testing.T) pretrained.Store {
	t.Helper()
	store := pretrained.Store{Home: t.TempDir()}
	if _, err := os.Stat(pretrained.NSFWJSPath()); err != nil {
		t.Fatalf("the nsfwjs tarball is missing (%v): run make deps", err)
	}
	if _, err := store.ImportTFJS(context.Background(), pretrained.NSFWJSPath(), "mobilenet_v2", "mobilenetv2", "0,1"); err != nil {
		t.Fatal(err)
	}
	return store
}

// The trained judge ranks distortions as people do: more blur is farther,
// and a JPEG at quality 10 is farther than one at quality 90.
func TestJudgeRanksDistortions(t *testing.T) {
	store := trainedJudge(t)
	dir := t.TempDir()
	distance := func(a, b string) float64 {
		p, err := Similarity(context.Background(), SimilarityOptions{A: a, B: b, Judge: "mobilenetv2", Store: store, Log: discardLog()})
		if err != nil {
			t.Fatal(err)
		}
		return *p[0].Distance
	}
	jpeg := func(img image.Image, q int) string {
		p := filepath.Join(dir, fmt.Sprintf("q%d.jpg", q))
		if err := imaging.Save(img, p, imaging.JPEGQuality(q)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for seed := range uint64(3) {
		img := testimages.Photo(20+seed, 160, 128)
		ref := filepath.Join(dir, "ref.png")
		if err := imaging.Save(img, ref); err != nil {
			t.Fatal(err)
		}
		if d := distance(ref, ref); d != 0 {
			t.Fatalf("distance of an image to itself = %v", d)
		}
		prev := 0.0
		for _, sigma := range []float64{0.5, 1, 2, 4} {
			blurred := filepath.Join(dir, "blur.png")
			if err := imaging.Save(imaging.Blur(img, sigma), blurred); err != nil {
				t.Fatal(err)
			}
			d := distance(ref, blurred)
			if d <= prev {
				t.Fatalf("photo %d, blur sigma %v: perceptual distance %v, not above %v", seed, sigma, d, prev)
			}
			prev = d
		}
		if q10, q90 := distance(ref, jpeg(img, 10)), distance(ref, jpeg(img, 90)); q10 <= q90 {
			t.Fatalf("photo %d: JPEG quality 10 at %v is not farther than quality 90 at %v", seed, q10, q90)
		}
	}
}
