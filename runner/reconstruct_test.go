package runner

import (
	"context"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/pretrained"
)

func TestReconstructKeepsSizes(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.Steps = 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})

	in := t.TempDir()
	sizes := map[string]image.Point{"odd.png": {37, 53}, "wide.jpg": {300, 90}, "tiny.png": {5, 3}, "square.png": {64, 64}}
	for name, p := range sizes {
		img := testimages.Photo(3, p.X, p.Y)
		if err := imaging.Save(img, filepath.Join(in, name), imaging.JPEGQuality(90)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(in, "broken.jpg"), []byte("nope"), 0o644)
	out := filepath.Join(t.TempDir(), "out")
	log, buf := captureLog()
	sum, err := Reconstruct(context.Background(), ReconstructOptions{Run: run, Out: out, Inputs: []string{in}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Written) != len(sizes) || len(sum.Skipped) != 1 || !strings.Contains(buf.String(), "broken.jpg") {
		t.Fatalf("wrote %d, skipped %v", len(sum.Written), sum.Skipped)
	}
	for name, p := range sizes {
		got := filepath.Join(out, strings.TrimSuffix(name, filepath.Ext(name))+".png")
		f, err := os.Open(got)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _, err := image.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Width != p.X || cfg.Height != p.Y {
			t.Errorf("%s is %dx%d, want %dx%d", got, cfg.Width, cfg.Height, p.X, p.Y)
		}
	}
	if _, err := os.Stat(filepath.Join(out, GridFile)); err != nil {
		t.Fatal(err)
	}
}

// Tiling must be invisible: a tiled image equals the same pixels run as
// part of a single larger tile, up to rounding, away from the image edge.
func TestReconstructTilesAgree(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.Steps = 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	model, _, err := OpenModel(run, pretrained.Store{})
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	img := testimages.Photo(5, 200, 72)
	tiled, err := ReconstructImage(model, img, 32) // 128 px tiles: two across
	if err != nil {
		t.Fatal(err)
	}
	whole, err := ReconstructImage(model, img, 64) // 256 px tiles: one
	if err != nil {
		t.Fatal(err)
	}
	var sum, n float64
	for i := range tiled.Pix {
		d := float64(tiled.Pix[i]) - float64(whole.Pix[i])
		sum += d * d
		n++
	}
	if rms := sum / n; rms > 4 {
		t.Fatalf("tiled and whole reconstructions differ: mean squared difference %.2f", rms)
	}
}

func TestReconstructRefusesNameClash(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		f, _ := os.Create(filepath.Join(d, "same.jpg"))
		jpeg.Encode(f, testimages.Photo(1, 8, 8), nil)
		f.Close()
	}
	_, err := expandInputs([]string{a, b})
	if err == nil || !strings.Contains(err.Error(), "same.png") {
		t.Fatalf("err = %v", err)
	}
}
